"""Lua scripts inside pipelines, in the pipeline's own round trip.

redis-py runs a pipeline holding `Script` calls by sending SCRIPT EXISTS first and
waiting for the answer: a round trip of its own on every execute. Here the pipeline
carries a SCRIPT LOAD of the source ahead of bare EVALSHAs instead: on a server that
has the script, LOAD only hashes the text and answers the SHA; on one that restarted
or flushed its scripts, it loads it. Either way the EVALSHAs after it find it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from redis.commands.core import Script


def script_queue(pipe, script: Script, calls: Iterable[tuple[Sequence, Sequence]]) -> int:
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
