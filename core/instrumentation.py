"""Command metrics for every Redis command Kestrel sends (docs/design.md, "Command metrics").

One hook at the bottom of redis-py: the Connection class of every role's pool notes when
a command is written and when its reply is read. Per role, command and key family:
kestrel_redis_commands_total, kestrel_redis_command_errors_total{error},
kestrel_redis_command_duration_seconds (a pipeline is one round trip), and every 1,000
commands the reference article's summary line. Sums go to prometheus-client at most
once a second, at each scrape and at exit.
"""

from __future__ import annotations

import atexit
import bisect
import json
import logging
import os
import re
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from prometheus_client import Counter, Histogram
from redis.connection import BlockingConnectionPool, Connection, ConnectionPool, SSLConnection
from redis.exceptions import ResponseError
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection

from core.keys import redact_key

summary_logger = logging.getLogger("kestrel.redis.summary")

SUMMARY_EVERY = 1000  # commands between two summary lines, as in the reference article
FLUSH_INTERVAL = 1.0  # seconds: the most a process's figures lag behind in /metrics
MAX_FAMILIES = 200  # distinct key families per process; beyond it, "other"

# Round-trip latency buckets, seconds: a loopback GET takes ~50 us, a slow command ms.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PIPELINE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

COMMANDS = Counter(
    "kestrel_redis_commands",
    "Redis commands sent, by role, command and key family (a pipeline's commands one each).",
    ["role", "command", "family"],
)
ERRORS = Counter(
    "kestrel_redis_command_errors",
    "Redis commands answered with an error or lost on the wire, by error class.",
    ["role", "command", "family", "error"],
)
LATENCY = Histogram(
    "kestrel_redis_command_duration_seconds",
    "Redis round trips, from writing the command to reading its reply. A pipeline or "
    "MULTI/EXEC is one round trip, under command PIPELINE or MULTI.",
    ["role", "command", "family"],
    buckets=LATENCY_BUCKETS,
)
PIPELINE_SIZE = Histogram(
    "kestrel_redis_pipeline_commands",
    "Commands per pipeline or MULTI/EXEC round trip (MULTI and EXEC included).",
    ["role", "kind"],
    buckets=PIPELINE_BUCKETS,
)


def enabled() -> bool:
    """Whether new pools get instrumented connections (KESTREL_REDIS_METRICS_ENABLED)."""
    if not settings.configured:
        return True
    return bool(getattr(settings, "KESTREL_REDIS_METRICS_ENABLED", True))


# --- Command names and key families -------------------------------------------------

# Label values come from this table, so the command label has a fixed set of values.
KNOWN_COMMANDS = frozenset(
    """
    APPEND COPY DECR DECRBY DEL DUMP EXISTS EXPIRE EXPIREAT EXPIRETIME GET GETDEL GETEX
    GETRANGE GETSET INCR INCRBY INCRBYFLOAT KEYS LCS MGET MOVE MSET MSETNX PERSIST PEXPIRE
    PEXPIREAT PEXPIRETIME PSETEX PTTL RANDOMKEY RENAME RENAMENX RESTORE SCAN SET SETEX
    SETNX SETRANGE SORT SORT_RO STRLEN SUBSTR TOUCH TTL TYPE UNLINK
    HDEL HEXISTS HEXPIRE HEXPIREAT HEXPIRETIME HGET HGETALL HGETDEL HGETEX HINCRBY
    HINCRBYFLOAT HKEYS HLEN HMGET HMSET HPERSIST HPEXPIRE HPEXPIREAT HPEXPIRETIME HPTTL
    HRANDFIELD HSCAN HSET HSETEX HSETNX HSTRLEN HTTL HVALS
    BLMOVE BLMPOP BLPOP BRPOP BRPOPLPUSH LINDEX LINSERT LLEN LMOVE LMPOP LPOP LPOS LPUSH
    LPUSHX LRANGE LREM LSET LTRIM RPOP RPOPLPUSH RPUSH RPUSHX
    SADD SCARD SDIFF SDIFFSTORE SINTER SINTERCARD SINTERSTORE SISMEMBER SMEMBERS
    SMISMEMBER SMOVE SPOP SRANDMEMBER SREM SSCAN SUNION SUNIONSTORE
    BZMPOP BZPOPMAX BZPOPMIN ZADD ZCARD ZCOUNT ZDIFF ZDIFFSTORE ZINCRBY ZINTER ZINTERCARD
    ZINTERSTORE ZLEXCOUNT ZMPOP ZMSCORE ZPOPMAX ZPOPMIN ZRANDMEMBER ZRANGE ZRANGEBYLEX
    ZRANGEBYSCORE ZRANGESTORE ZRANK ZREM ZREMRANGEBYLEX ZREMRANGEBYRANK ZREMRANGEBYSCORE
    ZREVRANGE ZREVRANGEBYLEX ZREVRANGEBYSCORE ZREVRANK ZSCAN ZSCORE ZUNION ZUNIONSTORE
    PFADD PFCOUNT PFMERGE
    XACK XADD XAUTOCLAIM XCLAIM XDEL XGROUP XINFO XLEN XPENDING XRANGE XREAD XREADGROUP
    XREVRANGE XSETID XTRIM
    BITCOUNT BITFIELD BITFIELD_RO BITOP BITPOS GETBIT SETBIT
    GEOADD GEODIST GEOHASH GEOPOS GEORADIUS GEORADIUSBYMEMBER GEOSEARCH GEOSEARCHSTORE
    EVAL EVALSHA EVALSHA_RO EVAL_RO FCALL FCALL_RO FUNCTION SCRIPT
    PSUBSCRIBE PUBLISH PUBSUB PUNSUBSCRIBE SPUBLISH SSUBSCRIBE SUBSCRIBE SUNSUBSCRIBE
    UNSUBSCRIBE
    DISCARD EXEC MULTI UNWATCH WATCH
    ACL AUTH BGREWRITEAOF BGSAVE CLIENT CLUSTER COMMAND CONFIG DBSIZE DEBUG ECHO FAILOVER
    FLUSHALL FLUSHDB HELLO INFO LASTSAVE LATENCY LOLWUT MEMORY MODULE MONITOR OBJECT PING
    QUIT READONLY READWRITE REPLICAOF RESET ROLE SAVE SELECT SHUTDOWN SLAVEOF SLOWLOG
    SWAPDB TIME WAIT WAITAOF
    """.split()  # noqa: SIM905 - a command table reads better as words than as 250 quoted strings
)
# Commands whose second word is part of the name ("CONFIG GET", "SCRIPT LOAD").
CONTAINERS = frozenset(
    {"ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY", "MODULE", "OBJECT"}
    | {"PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO"}
)
# Containers whose subcommand takes a key next ("OBJECT ENCODING key", "MEMORY USAGE key").
KEYED_CONTAINERS = frozenset({"OBJECT", "MEMORY USAGE", "XINFO", "XGROUP"})
KEYLESS = frozenset(
    """
    ACL AUTH BGREWRITEAOF BGSAVE CLIENT CLUSTER COMMAND CONFIG DBSIZE DEBUG DISCARD ECHO
    EXEC FAILOVER FLUSHALL FLUSHDB FUNCTION HELLO INFO KEYS LASTSAVE LATENCY LOLWUT MEMORY
    MODULE MONITOR MULTI PING PUBSUB QUIT RANDOMKEY READONLY READWRITE REPLICAOF RESET ROLE
    SAVE SCAN SCRIPT SELECT SHUTDOWN SLAVEOF SLOWLOG SWAPDB TIME UNWATCH WAIT WAITAOF
    """.split()  # noqa: SIM905 - a command table reads better as words than as 250 quoted strings
)
# Arguments to skip before the first key: BITOP <op> <dest>, ZUNION <numkeys> <key>...
KEY_SKIP = {"BITOP": 1, "ZUNION": 1, "ZINTER": 1, "ZDIFF": 1, "ZINTERCARD": 1, "SINTERCARD": 1, "LMPOP": 1}
KEY_SKIP |= {"ZMPOP": 1, "BLMPOP": 2, "BZMPOP": 2}
SCRIPTS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
STREAM_READS = frozenset({"XREAD", "XREADGROUP"})
BLOCKING = frozenset({"BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP"})
BLOCKING |= {"WAIT", "WAITAOF"}
# One reply per channel: SUBSCRIBE a b c is answered three times.
SUBSCRIPTIONS = frozenset({"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE"})

_SUBCOMMAND = re.compile(r"[A-Z][A-Z_-]{0,23}\Z")
_NAME_PART = re.compile(r"[a-z][a-z0-9_]*\Z")
_CACHE_SIZE = 1024

# Where a command's first key is: none, at a fixed offset, after a script's numkeys, or
# after XREAD's STREAMS.
KEYLESS_MODE, KEYED_MODE, SCRIPT_MODE, STREAMS_MODE = range(4)

# args[0] -> (label, arguments the name took, key mode, arguments to skip, blocking?)
_commands: dict[object, tuple[str, int, int, int, bool]] = {}
_families: dict[tuple[str, str], str] = {}
_prefix: str | None = None


def _key_prefix() -> str:
    global _prefix
    if _prefix is None:
        _prefix = getattr(settings, "KESTREL_KEY_PREFIX", "kestrel") if settings.configured else "kestrel"
    return _prefix


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return None


def _describe(name: str, taken: int) -> tuple[str, int, int, int, bool]:
    if name == "OTHER":
        return name, taken, KEYLESS_MODE, 0, False
    if " " in name:  # a container's subcommand: keyed only for OBJECT, XINFO, MEMORY USAGE...
        keyed = name in KEYED_CONTAINERS or name.split(" ", 1)[0] in KEYED_CONTAINERS
        return name, taken, KEYED_MODE if keyed else KEYLESS_MODE, 0, False
    if name in KEYLESS or name in CONTAINERS:
        return name, taken, KEYLESS_MODE, 0, name in BLOCKING
    if name in SCRIPTS:
        return name, taken, SCRIPT_MODE, 0, False
    if name in STREAM_READS:
        return name, taken, STREAMS_MODE, 0, False
    return name, taken, KEYED_MODE, KEY_SKIP.get(name, 0), name in BLOCKING


def _command(args: tuple) -> tuple[str, int, int, int, bool]:
    first = args[0]
    described = _commands.get(first)
    if described is not None:
        return described
    text = _text(first)
    words = text.upper().split() if text is not None else []
    if not words or words[0] not in KNOWN_COMMANDS:
        described = _describe("OTHER", 1)
    elif words[0] in CONTAINERS:
        sub, taken = (words[1], 1) if len(words) > 1 else ((_text(args[1]) or "").upper() if len(args) > 1 else "", 2)
        if not _SUBCOMMAND.match(sub):
            return _describe(words[0], 1)
        described = _describe(f"{words[0]} {sub}", taken)
        if taken == 2:
            return described  # its name depends on args[1]: not cached under args[0]
    else:
        described = _describe(words[0], 1)
    if len(_commands) < _CACHE_SIZE:
        _commands[first] = described
    return described


def key_family(key: object) -> str:
    """`<app>:<entity>` of a key built by the grammar, "rq" for RQ's keys, else "other"."""
    text = _text(key)
    if text is None:
        return "other"
    parts = text.split(":", 3)
    if len(parts) < 2:
        return "other"
    if parts[0] == "rq":
        return "rq"
    if parts[0] != _key_prefix() or len(parts) < 3:
        return "other"
    app, entity = parts[1], parts[2]
    if app == "django":  # third-party keys namespaced by core.keys.django_cache_key
        return "django"
    family = _families.get((app, entity))
    if family is None:
        if len(_families) >= MAX_FAMILIES or not (_NAME_PART.match(app) and _NAME_PART.match(entity)):
            return "other"
        family = _families.setdefault((app, entity), f"{app}:{entity}")
    return family


def classify(args: tuple) -> tuple[str, str, bool]:
    """(command label, key family of its first key, blocking?) of one command."""
    described = _commands.get(args[0])
    if described is None:
        described = _command(args)
    name, taken, mode, skip, blocking = described
    if mode == KEYED_MODE:
        position = taken + skip
        if position >= len(args):
            return name, "none", blocking
        key = args[position]
        if key.__class__ is str:  # the usual case, without a call: a family already seen
            parts = key.split(":", 3)
            if len(parts) > 2 and parts[0] == _prefix:
                family = _families.get((parts[1], parts[2]))
                if family is not None:
                    return name, family, blocking
        return name, key_family(key), blocking
    position, blocking = _key_position(args, described)
    if position is None:
        return name, "none", blocking
    return name, key_family(args[position]), blocking


def _key_position(args: tuple, described: tuple[str, int, int, int, bool]) -> tuple[int | None, bool]:
    """Where the first key of `args` is (None: keyless), and whether the command blocks."""
    name, taken, mode, skip, blocking = described
    if mode == KEYED_MODE:
        position = taken + skip
    elif mode == KEYLESS_MODE:
        return None, blocking
    elif mode == SCRIPT_MODE:  # EVALSHA sha numkeys key...
        try:
            numkeys = int(args[taken + 1])
        except (IndexError, TypeError, ValueError):
            return None, False
        if numkeys <= 0:
            return None, False
        position = taken + 2
        blocking = False
    else:  # XREAD [COUNT n] [BLOCK ms] STREAMS key... id...
        words = [(_text(arg) or "").upper() for arg in args[taken:]]
        if "STREAMS" not in words:
            return None, False
        position = taken + words.index("STREAMS") + 1
        blocking = "BLOCK" in words
    return (position if position < len(args) else None), blocking


def redacted_command(args: tuple) -> str:
    """A command as it may be shown or logged: its name and its first key, redacted.

    The other arguments are values (a session, a lock's token, a password given to
    AUTH): only their number is kept.
    """
    if not args:
        return ""
    described = _commands.get(args[0]) or _command(args)
    name, taken = described[0], described[1]
    position, _ = _key_position(args, described)
    words = [name] if position is None else [name, redact_key(_text(args[position]) or "")]
    others = len(args) - taken - (position is not None)
    return " ".join(words) + (f" … (+{others} arguments)" if others > 0 else "")


def _label(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ in ("redis.exceptions", "builtins", "socket"):
        return kind.__name__
    return "other"


# --- Recording ----------------------------------------------------------------------


class _Recorder:
    """This process's figures since the last flush, and the summary's running totals.

    One lock and one dict update per round trip; flush() hands the sums to
    prometheus-client (whose values are per-process files under gunicorn).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str, str], list] = {}
        self._errors: dict[tuple[str, str, str, str], int] = {}
        self._pipelines: dict[tuple[str, str], list] = {}
        self._next_flush = time.perf_counter() + FLUSH_INTERVAL
        # commands, errors, round trips, seconds since start; the same at the last summary
        self._totals = [0, 0, 0, 0.0]
        self._last_summary = ([0, 0, 0, 0.0], time.perf_counter())
        self._next_summary = SUMMARY_EVERY

    def after_fork(self) -> None:
        """A forked child (an RQ work-horse) must not report its parent's unflushed figures."""
        self._lock = threading.Lock()
        self._series, self._errors, self._pipelines = {}, {}, {}

    def _slot(self, key: tuple[str, str, str]) -> list:
        """[commands, seconds, count per latency bucket..., +Inf]; the lock is held."""
        slot = self._series.get(key)
        if slot is None:
            slot = self._series[key] = [0, 0.0] + [0] * (len(LATENCY_BUCKETS) + 1)
        return slot

    def record_one(self, role: str, name: str, family: str, started: float, blocking: bool) -> None:
        """One command answered without error: the hot path, kept short."""
        now = time.perf_counter()
        seconds = now - started
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds) + 2
        with self._lock:
            slot = self._series.get((role, name, family))
            if slot is None:
                slot = self._slot((role, name, family))
            slot[0] += 1
            slot[1] += seconds
            slot[bucket] += 1
            totals = self._totals
            totals[0] += 1
            if not blocking:
                totals[2] += 1
                totals[3] += seconds
            if totals[0] < self._next_summary and now < self._next_flush:
                return
            summary = self._summary_locked() if totals[0] >= self._next_summary else None
        self._after(now, summary)

    def record(
        self,
        role: str,
        name: str,
        family: str,
        started: float,
        blocking: bool,
        commands: list[tuple[str, str]] | None = None,
        errors: list[tuple[str, str, str]] | None = None,
    ) -> None:
        """Any round trip: a command, or a pipeline (`commands`) under name PIPELINE/MULTI.

        `errors` holds (command, family, error class) for each command that failed.
        """
        now = time.perf_counter()
        seconds = now - started
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds) + 2
        n_errors = len(errors) if errors else 0
        with self._lock:
            if commands is None:
                n_commands = 1
                self._slot((role, name, family))[0] += 1
            else:
                n_commands = len(commands)
                for command, command_family in commands:
                    self._slot((role, command, command_family))[0] += 1
                sizes = self._pipelines.get((role, name))
                if sizes is None:
                    sizes = self._pipelines[(role, name)] = [0, 0.0] + [0] * (len(PIPELINE_BUCKETS) + 1)
                sizes[1] += n_commands
                sizes[bisect.bisect_left(PIPELINE_BUCKETS, n_commands) + 2] += 1
            slot = self._slot((role, name, family))
            slot[1] += seconds
            slot[bucket] += 1
            for key in errors or ():
                key = (role, *key)
                self._errors[key] = self._errors.get(key, 0) + 1
            totals = self._totals
            totals[0] += n_commands
            totals[1] += n_errors
            if not blocking:
                totals[2] += 1
                totals[3] += seconds
            summary = self._summary_locked() if totals[0] >= self._next_summary else None
        self._after(now, summary)

    def _after(self, now: float, summary: dict | None) -> None:
        if now >= self._next_flush:
            self.flush()
        if summary is not None:
            summary_logger.info(json.dumps(summary, separators=(",", ":")))

    def _summary_locked(self) -> dict:
        commands, errors, round_trips, seconds = self._totals
        (last_commands, last_errors, last_round_trips, last_seconds), started = self._last_summary
        w_commands, w_errors = commands - last_commands, errors - last_errors
        w_round_trips, w_seconds = round_trips - last_round_trips, seconds - last_seconds
        now = time.perf_counter()
        self._last_summary = (list(self._totals), now)
        self._next_summary = (commands // SUMMARY_EVERY + 1) * SUMMARY_EVERY
        return {
            "event": "redis.commands",
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "pid": os.getpid(),
            # The reference article's three figures, since this process started...
            "commands": commands,
            "avg_ms": _ms(seconds, round_trips),
            "error_rate_pct": _pct(errors, commands),
            "errors": errors,
            "round_trips": round_trips,
            # ...and the same since the previous line.
            "window": {
                "commands": w_commands,
                "errors": w_errors,
                "error_rate_pct": _pct(w_errors, w_commands),
                "avg_ms": _ms(w_seconds, w_round_trips),
                "round_trips": w_round_trips,
                "seconds": round(now - started, 3),
            },
        }

    def flush(self) -> None:
        """Hand the figures gathered since the last flush to prometheus-client."""
        with self._lock:
            series, errors, pipelines = self._series, self._errors, self._pipelines
            self._series, self._errors, self._pipelines = {}, {}, {}
            self._next_flush = time.perf_counter() + FLUSH_INTERVAL
        for labels, slot in series.items():
            if slot[0]:
                COMMANDS.labels(*labels).inc(slot[0])
            if any(slot[2:]):
                _observe_many(LATENCY.labels(*labels), slot[1], slot[2:])
        for labels, count in errors.items():
            ERRORS.labels(*labels).inc(count)
        for labels, slot in pipelines.items():
            _observe_many(PIPELINE_SIZE.labels(*labels), slot[1], slot[2:])

    def totals(self) -> dict:
        """Since this process started: what the summary line reports."""
        with self._lock:
            commands, errors, round_trips, seconds = self._totals
        return {"commands": commands, "errors": errors, "round_trips": round_trips, "round_trip_seconds": seconds}


def _ms(seconds: float, round_trips: int) -> float:
    return round(seconds / round_trips * 1000, 3) if round_trips else 0.0


def _pct(part: int, whole: int) -> float:
    return round(part / whole * 100, 2) if whole else 0.0


def _observe_many(child, total: float, buckets: list) -> None:
    """Add many observations to a histogram child at once: their sum, count per bucket.

    prometheus-client has no batch observe; its histogram children keep one value per
    bucket (`_buckets`, not cumulative, the last one +Inf) and `_sum`, in memory or in
    the per-process files of multiprocess mode alike. tests/core/test_instrumentation
    checks the exposed _count, _sum and buckets, so a change there fails a test.
    """
    child._sum.inc(total)
    for index, count in enumerate(buckets):
        if count:
            child._buckets[index].inc(count)


recorder = _Recorder()
os.register_at_fork(after_in_child=recorder.after_fork)
atexit.register(recorder.flush)


def flush() -> None:
    """Publish this process's figures now (before a scrape, in tests)."""
    recorder.flush()
    _flush_core_metrics()


# --- The connection hook ------------------------------------------------------------


class _Op:
    """A round trip in flight that expects several replies: a pipeline, a SUBSCRIBE.

    A single command in flight is a plain tuple (name, family, started, blocking).
    """

    __slots__ = ("name", "family", "started", "replies", "blocking", "batch", "errors", "index")

    def __init__(self, name, family, started, replies, blocking, batch=None):
        self.name = name
        self.family = family
        self.started = started
        self.replies = replies
        self.blocking = blocking
        self.batch = batch  # pipelines: [(command, family), ...] in the order sent
        self.errors = None
        self.index = 0


def _mark_recorded(exc: BaseException) -> None:
    try:
        exc._kestrel_recorded = True
    except AttributeError:  # an exception type without a __dict__
        pass


def _recorded(exc: BaseException) -> bool:
    """Already counted as a CONNECT error (redis-py re-raises it as a ConnectionError)."""
    return getattr(exc, "_kestrel_recorded", False) or getattr(exc.__context__, "_kestrel_recorded", False)


def _role_of(client_name: str | None) -> str:
    # The pools of core.redis name their connections kestrel-<role>; feeds.sse's
    # subscriber pool (kestrel-sse) is on the state role.
    return {"kestrel-state": "state", "kestrel-cache": "cache", "kestrel-sse": "state"}.get(client_name or "", "other")


class InstrumentedConnectionMixin:
    """Times every command between its write and its reply; see the module docstring.

    Replies come back in the order commands were written (pub/sub messages aside), so
    a FIFO of round trips in flight per connection pairs each reply with its command.
    A connection is used by one thread at a time (the pool), so the FIFO needs no lock.
    """

    def __init__(self, *args, **kwargs):
        self._kestrel_in_flight: deque = deque()
        self._kestrel_batch: list | None = None
        self._kestrel_handshake = False
        super().__init__(*args, **kwargs)
        self._kestrel_role = _role_of(getattr(self, "client_name", None))

    def _connect(self):
        # Only when a socket is opened. redis-py's pools connect before handing a
        # connection out, so a Redis that is down fails here, before any command is
        # written: recorded as CONNECT, or the error rate would read 0 % exactly when
        # every command fails. (Not connect(): the pool calls it on every checkout.)
        started = time.perf_counter()
        try:
            sock = super()._connect()
        except BaseException as exc:
            # What connect() turns it into: socket timeouts and OS errors.
            label = "TimeoutError" if isinstance(exc, TimeoutError) else "ConnectionError"
            errors = [("CONNECT", "none", label if isinstance(exc, OSError) else _label(exc))]
            recorder.record(self._kestrel_role, "CONNECT", "none", started, True, errors=errors)
            _mark_recorded(exc)
            raise
        # Out of the summary's average (as blocking commands are): a connect is not a round trip.
        recorder.record(self._kestrel_role, "CONNECT", "none", started, True)
        return sock

    def on_connect_check_health(self, *args, **kwargs):
        # redis-py probes optional features (CLIENT SETINFO, MAINT_NOTIFICATIONS) and
        # ignores a refusal: those replies are counted as commands, not as errors.
        self._kestrel_handshake = True
        try:
            return super().on_connect_check_health(*args, **kwargs)
        finally:
            self._kestrel_handshake = False

    def pack_command(self, *args):
        self._kestrel_batch = [args]
        return super().pack_command(*args)

    def pack_commands(self, commands):
        commands = list(commands)
        self._kestrel_batch = commands
        return super().pack_commands(commands)

    def send_command(self, *args, **kwargs):
        started = time.perf_counter()
        self._kestrel_batch = None
        # classify()'s usual case inline (a known command, a str key of a family already
        # seen): one Python call less on every command.
        family = None
        described = _commands.get(args[0])
        if described is not None and described[2] == KEYED_MODE:
            position = described[1] + described[3]
            if position < len(args):
                key = args[position]
                if key.__class__ is str:
                    parts = key.split(":", 3)
                    if len(parts) > 2 and parts[0] == _prefix:
                        family = _families.get((parts[1], parts[2]))
        if family is None:
            name, family, blocking = classify(args)
        else:
            name, blocking = described[0], described[4]
        try:
            super().send_command(*args, **kwargs)
        except BaseException as exc:
            if not _recorded(exc):  # a failed reconnect is already a CONNECT error
                errors = [(name, family, _label(exc))]
                recorder.record(self._kestrel_role, name, family, started, blocking, errors=errors)
            raise
        if name in SUBSCRIPTIONS and len(args) > 2:
            self._kestrel_in_flight.append(_Op(name, family, started, len(args) - 1, blocking))
        else:
            self._kestrel_in_flight.append((name, family, started, blocking))

    def send_packed_command(self, command, check_health=True):
        # Taken before sending: a reconnect inside sends its own (unpacked) commands.
        batch, self._kestrel_batch = self._kestrel_batch, None
        if batch is None:
            return super().send_packed_command(command, check_health)
        started = time.perf_counter()
        classified = [classify(args) for args in batch]
        if len(batch) == 1:
            name, family, blocking = classified[0]
            op = (name, family, started, blocking)
        else:
            kind = "MULTI" if classified[0][0] == "MULTI" else "PIPELINE"
            families = {family for _, family, _ in classified if family != "none"}
            family = families.pop() if len(families) == 1 else ("mixed" if families else "none")
            op = _Op(kind, family, started, len(batch), False, [(n, f) for n, f, _ in classified])
        try:
            super().send_packed_command(command, check_health)
        except BaseException as exc:
            if not _recorded(exc):
                self._kestrel_fail(op, exc)
            raise
        self._kestrel_in_flight.append(op)

    def read_response(self, *args, **kwargs):
        in_flight = self._kestrel_in_flight
        if not in_flight:  # a pub/sub message, or a reply to a command not seen
            return super().read_response(*args, **kwargs)
        op = in_flight[0]
        try:
            response = super().read_response(*args, **kwargs)
        except ResponseError as exc:  # an error reply: the connection is still in step
            self._kestrel_reply(op, exc, None)
            raise
        except BaseException as exc:
            # Nothing more will be read for what is in flight: redis-py disconnects.
            in_flight.clear()
            self._kestrel_fail(op, exc)
            raise
        if op.__class__ is tuple:
            in_flight.popleft()
            recorder.record_one(self._kestrel_role, *op)
        else:
            self._kestrel_reply(op, None, response)
        return response

    def disconnect(self, *args, **kwargs):
        # Replies still owed are lost with the socket (a pipeline or pub/sub torn down).
        self._kestrel_in_flight.clear()
        self._kestrel_batch = None
        return super().disconnect(*args, **kwargs)

    def _kestrel_reply(self, op, error: BaseException | None, response) -> None:
        if op.__class__ is tuple:  # a single command's error reply
            self._kestrel_in_flight.popleft()
            name, family, started, blocking = op
            errors = None if self._kestrel_handshake else [(name, family, _label(error))]
            recorder.record(self._kestrel_role, name, family, started, blocking, errors=errors)
            return
        if op.batch is not None:
            if error is not None:
                self._kestrel_batch_error(op, op.index, error)
            elif op.name == "MULTI" and op.index == len(op.batch) - 1 and isinstance(response, list):
                for offset, item in enumerate(response):  # EXEC: one reply per queued command
                    if isinstance(item, ResponseError):
                        self._kestrel_batch_error(op, offset + 1, item)
            op.index += 1
        elif error is not None and op.errors is None:
            op.errors = [(op.name, op.family, _label(error))]
        op.replies -= 1
        if op.replies > 0:
            return
        self._kestrel_in_flight.popleft()
        recorder.record(self._kestrel_role, op.name, op.family, op.started, op.blocking, op.batch, op.errors)

    def _kestrel_batch_error(self, op: _Op, index: int, error: BaseException) -> None:
        if op.errors is None:
            op.errors = []
        command, family = op.batch[index] if 0 <= index < len(op.batch) else (op.name, op.family)
        op.errors.append((command, family, _label(error)))

    def _kestrel_fail(self, op, exc: BaseException) -> None:
        """The round trip failed on the wire: each of its unanswered commands is an error."""
        label = _label(exc)
        if op.__class__ is tuple:
            name, family, started, blocking = op
            recorder.record(self._kestrel_role, name, family, started, blocking, errors=[(name, family, label)])
            return
        if op.batch is None:
            errors = [(op.name, op.family, label)]
        else:
            errors = list(op.errors or []) + [(command, family, label) for command, family in op.batch[op.index :]]
        recorder.record(self._kestrel_role, op.name, op.family, op.started, op.blocking, op.batch, errors)


class InstrumentedConnection(InstrumentedConnectionMixin, Connection):
    """A plain TCP connection with command metrics (for a pool's connection_class)."""


_classes: dict[type, type] = {Connection: InstrumentedConnection}
_classes_lock = threading.Lock()


def instrumented(connection_class: type) -> type:
    """The instrumented subclass of a redis-py connection class (TCP, TLS, unix socket).

    The class itself when instrumentation is off or it already is instrumented.
    """
    if not enabled() or issubclass(connection_class, InstrumentedConnectionMixin):
        return connection_class
    with _classes_lock:
        cls = _classes.get(connection_class)
        if cls is None:
            cls = type(
                f"Instrumented{connection_class.__name__}",
                (InstrumentedConnectionMixin, connection_class),
                {"__module__": __name__, "__doc__": f"{connection_class.__name__} with command metrics."},
            )
            _classes[connection_class] = cls
        return cls


class InstrumentedConnectionPool(ConnectionPool):
    """ConnectionPool whose connections record command metrics.

    A pool class rather than a `connection_class` argument: from_url picks the class
    from the URL (rediss:// is TLS, unix:// a socket), which an explicit argument would
    override; this keeps the URL's choice and instruments it.
    """

    def __init__(self, connection_class=Connection, **kwargs):
        super().__init__(connection_class=instrumented(connection_class), **kwargs)


class InstrumentedBlockingConnectionPool(BlockingConnectionPool):
    """BlockingConnectionPool whose connections record command metrics (see above)."""

    def __init__(self, connection_class=Connection, **kwargs):
        super().__init__(connection_class=instrumented(connection_class), **kwargs)


class InstrumentedSentinelConnectionPool(SentinelConnectionPool):
    """SentinelConnectionPool whose Sentinel-managed connections record command metrics."""

    def __init__(self, service_name, sentinel_manager, **kwargs):
        # from_url names SSLConnection for rediss://; behind Sentinel that must be the
        # Sentinel-managed TLS class, or failovers would not be followed.
        given = kwargs.pop("connection_class", None)
        tls = kwargs.pop("ssl", False) or (given is not None and issubclass(given, SSLConnection))
        managed = SentinelManagedSSLConnection if tls else SentinelManagedConnection
        super().__init__(service_name, sentinel_manager, connection_class=instrumented(managed), **kwargs)


# --- core.metrics counters in multiprocess mode -------------------------------------

_core_counters: dict[tuple[str, tuple[str, ...]], Counter] = {}
_core_lock = threading.Lock()
# (core.metrics name, its labels as passed) -> the Prometheus child, None if not exported.
_core_children: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
_MISSING = object()
# Counts not yet handed to prometheus-client, and when they are due (under _core_lock).
_core_pending: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}
_core_next_flush = [0.0]
_CORE_NAME = re.compile(r"[a-z][a-z0-9_.]*\Z")


def multiprocess_mode() -> bool:
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


def core_metric_name(name: str) -> str | None:
    """The Prometheus name of a core.metrics counter ("cache.hit" -> "kestrel_cache_hit")."""
    if not _CORE_NAME.match(name):
        return None
    exported = "kestrel_" + name.replace(".", "_")
    if exported.startswith(("kestrel_redis_", "kestrel_rq_")):  # ours, computed here
        return None
    return exported


def core_metric_sink(name: str, amount: int, labels: dict[str, str]) -> None:
    """core.metrics.incr's forwarder under gunicorn (PROMETHEUS_MULTIPROC_DIR set).

    In one process /metrics reads core.metrics itself (ops.monitoring); with several,
    each process must write its counts where the scraped one can read them, which is
    what prometheus-client's multiprocess values are. Every cache hit comes through
    here, so the counts are summed in memory and written with the Redis figures, at
    most FLUSH_INTERVAL later (flush()).
    """
    if not multiprocess_mode():
        return
    series = (name, tuple(labels.items()))
    with _core_lock:
        _core_pending[series] = _core_pending.get(series, 0) + amount
        due = time.perf_counter() >= _core_next_flush[0]
    if due:
        flush()


def _flush_core_metrics() -> None:
    with _core_lock:
        pending = dict(_core_pending)
        _core_pending.clear()
        _core_next_flush[0] = time.perf_counter() + FLUSH_INTERVAL
    for (name, labels), amount in pending.items():
        child = _core_children.get((name, labels), _MISSING)
        if child is _MISSING:
            child = _core_children[(name, labels)] = _core_child(name, dict(labels))
        if child is not None:
            child.inc(amount)


def _forget_core_metrics() -> None:
    # A forked child (an RQ work-horse) must not report its parent's unflushed counts.
    _core_pending.clear()


os.register_at_fork(after_in_child=_forget_core_metrics)
atexit.register(_flush_core_metrics)


def _core_child(name: str, labels: dict[str, str]) -> Any:
    exported = core_metric_name(name)
    if exported is None:
        return None
    labelnames = tuple(sorted(labels))
    counter = _core_counters.get((exported, labelnames))
    if counter is None:
        counter = Counter(exported, f"core.metrics counter {name}", labelnames, registry=None)
        _core_counters[(exported, labelnames)] = counter
    return counter.labels(**labels) if labelnames else counter
