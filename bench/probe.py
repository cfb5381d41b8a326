"""Redis traffic of a block of code, for the child benchmarks (jobs, fan-out, locks).

Two counts, because neither alone says what a block costs:

- commands, from the server (INFO commandstats): every command Redis ran, Lua
  scripts' inner calls included, whoever sent it. The private server is idle apart
  from the benchmark, so the delta is the block's (plus a PING of a health check now
  and then).
- round trips, from this process: each time redis-py writes a request to a socket
  (a pipeline is one write, a command one). The server's read events are no substitute
  for a big pipeline: Redis reads a 100 kB pipeline in several reads.

Only the child benchmarks import this (they run Django); the harness never does.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import redis
from redis.connection import AbstractConnection


@dataclass
class Traffic:
    commands: int = 0
    # Requests this process wrote (a pipeline counts once), across every client and thread.
    round_trips: int = 0
    by_command: dict[str, int] = field(default_factory=dict)

    def per(self, count: int) -> dict:
        """The figures divided by `count` (jobs, followers, acquisitions...)."""
        return {
            "commands": self.commands / count,
            "round_trips": self.round_trips / count,
            "by_command": {name: calls / count for name, calls in sorted(self.by_command.items())},
        }


def command_calls(client: redis.Redis) -> Counter[str]:
    """Calls per command since the server started (INFO commandstats)."""
    info = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): stats["calls"] for name, stats in info.items()})


class RedisProbe:
    """`with RedisProbe(client) as probe: ...` then `probe.traffic`.

    `client` only reads INFO, outside the counted window, so the probe's own
    requests are not counted as round trips; its one INFO before the block is taken
    off the server's count.
    """

    _lock = threading.Lock()
    _active: list[RedisProbe] = []
    _original = AbstractConnection.send_packed_command

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.traffic = Traffic()
        self._sends = 0
        self._before: Counter[str] = Counter()

    def __enter__(self) -> RedisProbe:
        self._before = command_calls(self.client)
        with self._lock:
            self._active.append(self)
            if len(self._active) == 1:
                AbstractConnection.send_packed_command = _counting_send
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._active.remove(self)
            if not self._active:
                AbstractConnection.send_packed_command = RedisProbe._original
        after = command_calls(self.client)
        delta = after - self._before  # Counter subtraction keeps positive counts only
        delta["info"] -= 1  # ours, before the block
        by_command = {name: calls for name, calls in delta.items() if calls > 0}
        self.traffic = Traffic(commands=sum(by_command.values()), round_trips=self._sends, by_command=by_command)


def _counting_send(self, command, check_health=True):
    # Under the lock: several threads send at once (the lock benchmark), and `+=` on
    # an attribute is not atomic. A lock costs well under a microsecond; a send, tens.
    with RedisProbe._lock:
        for probe in RedisProbe._active:
            probe._sends += 1
    return RedisProbe._original(self, command, check_health)
