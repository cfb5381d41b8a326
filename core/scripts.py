"""Lua scripts inside pipelines, in the pipeline's own round trip.

The pipeline carries a SCRIPT LOAD of the source ahead of bare EVALSHAs, instead of
redis-py's SCRIPT EXISTS round trip before every execute (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from redis.commands.core import Script
from redis.typing import EncodableT, KeyT

from core.redis import RedisPipeline


def script_queue(
    pipe: RedisPipeline, script: Script, calls: Iterable[tuple[Sequence[KeyT], Sequence[EncodableT]]]
) -> int:
    """Queue `script` in `pipe` once per (keys, args) in `calls`; returns how many calls.

    Their replies follow the SCRIPT LOAD's (the SHA) in the pipeline's reply list.
    Nothing is queued when `calls` is empty.
    """
    calls = list(calls)
    if not calls:
        return 0
    pipe.script_load(script.script)
    for keys, args in calls:
        pipe.evalsha(script.sha, len(keys), *keys, *args)
    return len(calls)
