"""Counting Redis round trips as the server sees them: every reply read on a state or
cache connection of this thread, a pipeline or MULTI/EXEC as one, redis-py's own
SCRIPT EXISTS and EVALSHA included (core.instrumentation's recorder, which every pooled
connection reports to)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from core import instrumentation


@dataclass
class RoundTrips:
    """What this thread sent while recording: (role, command or PIPELINE/MULTI, [commands])."""

    sent: list[tuple[str, str, list[str]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sent)

    def clear(self) -> None:
        self.sent.clear()

    def commands(self) -> list[str]:
        return [command for _, name, batch in self.sent for command in (batch or [name])]


@pytest.fixture
def round_trips(monkeypatch) -> RoundTrips:
    trips = RoundTrips()
    recorder, me = instrumentation.recorder, threading.get_ident()
    record, record_one = recorder.record, recorder.record_one

    def noted(role, name, blocking, commands=None):
        # Connects and blocking reads are not round trips of a request; other threads
        # (the L1's invalidation subscriber) are not this call's.
        if role in ("state", "cache") and name != "CONNECT" and not blocking and threading.get_ident() == me:
            trips.sent.append((role, name, [command for command, _ in commands] if commands else []))

    def recording(role, name, family, started, blocking, commands=None, errors=None):
        noted(role, name, blocking, commands)
        return record(role, name, family, started, blocking, commands, errors)

    def recording_one(role, name, family, started, blocking):
        noted(role, name, blocking)
        return record_one(role, name, family, started, blocking)

    monkeypatch.setattr(recorder, "record", recording)
    monkeypatch.setattr(recorder, "record_one", recording_one)
    return trips
