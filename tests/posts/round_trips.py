"""Counting Redis round trips as the connections see them.

Every client of the state, cache and queue roles reports each round trip it completes to
core.instrumentation's recorder: a single command, or a whole pipeline or MULTI/EXEC as
one, redis-py's own extras (a SCRIPT EXISTS before a pipeline) included; a reconnect
counts as one CONNECT, its handshake inside it. `recording()` notes those of the calling
thread, so the L1's invalidation subscriber, on its own thread, is not counted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from core import instrumentation


@dataclass
class RoundTrips:
    """What the thread sent: (role, command or "PIPELINE"/"MULTI", the pipeline's commands)."""

    sent: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sent)

    def names(self) -> list[tuple[str, str]]:
        """(role, command) per round trip: a pipeline is ("cache", "PIPELINE")."""
        return [(role, name) for role, name, _ in self.sent]

    def commands(self) -> list[str]:
        """Every command sent, a pipeline's one by one (MULTI and EXEC included)."""
        return [command for _, name, batch in self.sent for command in (batch or [name])]


@contextmanager
def recording() -> Iterator[RoundTrips]:
    trips = RoundTrips()
    recorder, me = instrumentation.recorder, threading.get_ident()
    record, record_one = recorder.record, recorder.record_one

    def note(role, name, blocking, commands=None) -> None:
        # A connect is not a round trip of the call (the pool's, once per connection).
        if role in ("state", "cache", "queue") and name != "CONNECT" and not blocking and threading.get_ident() == me:
            trips.sent.append((role, name, [command for command, _ in commands] if commands else []))

    def recording_record(role, name, family, started, blocking, commands=None, errors=None):
        note(role, name, blocking, commands)
        return record(role, name, family, started, blocking, commands, errors)

    def recording_record_one(role, name, family, started, blocking):
        note(role, name, blocking)
        return record_one(role, name, family, started, blocking)

    recorder.record, recorder.record_one = recording_record, recording_record_one
    try:
        yield trips
    finally:
        del recorder.record, recorder.record_one  # the class's methods again
