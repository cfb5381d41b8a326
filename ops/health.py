"""What /healthz reports: can this process reach each Redis role and the database?

The queue role is probed (redis_queue) only when it is not the state role's database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connections

from core.redis import Role, get_redis, reported_roles


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"ok": self.ok, "latency_ms": round(self.latency_ms, 2)}
        if self.error:
            data["error"] = self.error
        return data


def _timed(name: str, probe) -> Probe:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - any failure is what a health check reports
        return Probe(name, False, (time.perf_counter() - started) * 1000, f"{type(exc).__name__}: {exc}")
    return Probe(name, True, (time.perf_counter() - started) * 1000)


def _ping_database() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")


def _ping_redis(role: Role) -> Callable[[], object]:
    return lambda: get_redis(role).ping()


def check_all() -> list[Probe]:
    return [
        *(_timed(f"redis_{role}", _ping_redis(role)) for role in reported_roles()),
        _timed("database", _ping_database),
    ]
