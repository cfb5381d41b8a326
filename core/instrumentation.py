"""Command metrics for every Redis command Kestrel sends (docs/design.md, "Command metrics").

Each role's client (InstrumentedRedis, with its pipelines and pub/sub) records, per role,
command and key family: kestrel_redis_commands_total, kestrel_redis_command_errors_total
{error}, kestrel_redis_command_duration_seconds (a pipeline is one round trip), and every
1,000 commands the reference article's summary line. Opening a connection is CONNECT (the
pools' connection class). Figures are summed in memory and flushed by core.metrics.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeAlias, TypedDict

from django.conf import settings
from prometheus_client import Counter, Histogram
from redis import Redis
from redis.client import Pipeline, PubSub
from redis.cluster import ClusterPubSub, RedisCluster, TransactionStrategy
from redis.connection import BlockingConnectionPool, Connection, ConnectionPool, SSLConnection
from redis.exceptions import RedisError, ResponseError, WatchError
from redis.sentinel import SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection
from redis.typing import EncodableT

from core import metrics
from core.cluster import KestrelCluster, KestrelClusterPipeline
from core.keys import redact_key
from core.redis import CircuitOpen

summary_logger = logging.getLogger("kestrel.redis.summary")

SUMMARY_EVERY = 1000  # commands between two summary lines, as in the reference article
MAX_FAMILIES = 200  # distinct key families per process; beyond it, "other"
MAX_COMMANDS = 250  # distinct command labels per process; beyond it, "OTHER"

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
    "Redis calls, from sending the command to its reply. A pipeline or MULTI/EXEC is one "
    "round trip, under command PIPELINE or MULTI.",
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
    """Whether new clients and pools are instrumented (KESTREL_REDIS_METRICS_ENABLED)."""
    if not settings.configured:
        return True
    return bool(getattr(settings, "KESTREL_REDIS_METRICS_ENABLED", True))


# --- Command names and key families -------------------------------------------------

# A command's label is its name as sent (first word, upper case) when it looks like a
# Redis command name, "OTHER" when not or once MAX_COMMANDS labels exist: a bounded set
# of values without a table of every command. Its first key is the argument after the
# name, except for the commands listed below (the key-family label needs no more).

# Commands whose second word is part of the name ("CONFIG GET", "SCRIPT LOAD").
CONTAINERS = frozenset(
    {"ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY", "MEMORY", "MODULE", "OBJECT"}
    | {"PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO"}
)
# Containers whose subcommand takes a key next ("OBJECT ENCODING key", "MEMORY USAGE key").
KEYED_CONTAINERS = frozenset({"OBJECT", "MEMORY USAGE", "XINFO", "XGROUP"})
# Commands without keys that take arguments (one without arguments needs no entry).
KEYLESS = frozenset(
    {"AUTH", "BGSAVE", "ECHO", "FAILOVER", "FLUSHALL", "FLUSHDB", "HELLO", "INFO", "KEYS", "LOLWUT", "PING"}
    | {"REPLICAOF", "SCAN", "SELECT", "SHUTDOWN", "SLAVEOF", "SWAPDB", "WAIT", "WAITAOF"}
)
# Arguments to skip before the first key: BITOP <op> <dest>, ZUNION <numkeys> <key>...
KEY_SKIP = {"BITOP": 1, "ZUNION": 1, "ZINTER": 1, "ZDIFF": 1, "ZINTERCARD": 1, "SINTERCARD": 1, "LMPOP": 1}
KEY_SKIP |= {"ZMPOP": 1, "BLMPOP": 2, "BZMPOP": 2}
SCRIPTS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"})
STREAM_READS = frozenset({"XREAD", "XREADGROUP"})
BLOCKING = frozenset({"BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP"})
BLOCKING |= {"WAIT", "WAITAOF"}

_NAME = re.compile(r"[A-Z][A-Z_]{0,23}\Z")
_SUBCOMMAND = re.compile(r"[A-Z][A-Z_-]{0,23}\Z")
_NAME_PART = re.compile(r"[a-z][a-z0-9_]*\Z")
_CACHE_SIZE = 1024

# Where a command's first key is: none, at a fixed offset, after a script's numkeys, or
# after XREAD's STREAMS.
KEYLESS_MODE, KEYED_MODE, SCRIPT_MODE, STREAMS_MODE = range(4)

# A command as redis-py sends it: its name, then its keys and values.
CommandArgs: TypeAlias = tuple[EncodableT, ...]
# What a command's name tells: (label, arguments the name took, key mode, arguments to
# skip, blocking?). A plain tuple, as is classify()'s answer: both are read on every command.
Described: TypeAlias = tuple[str, int, int, int, bool]
# classify()'s answer: (command label, key family of its first key, blocking?)
Classified: TypeAlias = tuple[str, str, bool]

# args[0] -> what its name tells
_commands: dict[object, Described] = {}
_labels: set[str] = set()
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


def _describe(name: str, taken: int) -> Described:
    if name != "OTHER" and name not in _labels:
        if len(_labels) >= MAX_COMMANDS:
            name = "OTHER"
        else:
            _labels.add(name)
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


def _command(args: CommandArgs) -> Described:
    first = args[0]
    described = _commands.get(first)
    if described is not None:
        return described
    text = _text(first)
    words = text.upper().split() if text is not None else []
    if not words or not _NAME.match(words[0]):
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


def classify(args: CommandArgs) -> Classified:
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
        if type(key) is str:  # the usual case, without a call: a family already seen
            parts = key.split(":", 3)
            if len(parts) > 2 and parts[0] == _prefix:
                family = _families.get((parts[1], parts[2]))
                if family is not None:
                    return name, family, blocking
        return name, key_family(key), blocking
    found, blocking = _key_position(args, described)
    if found is None:
        return name, "none", blocking
    return name, key_family(args[found]), blocking


def _key_position(args: CommandArgs, described: Described) -> tuple[int | None, bool]:
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


def redacted_command(args: CommandArgs) -> str:
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

# A series of kestrel_redis_commands_total and of the latency histogram: (role, command,
# family). A plain tuple, not a NamedTuple: one is built for every command, and a
# NamedTuple's constructor is a Python call.
CommandLabels: TypeAlias = tuple[str, str, str]


class FailedCommand(NamedTuple):
    """A command answered with an error or lost on the wire, as record() is told of it."""

    command: str
    family: str
    error: str  # the error's class ("ResponseError", "ConnectionError")


class ErrorLabels(NamedTuple):
    """A series of kestrel_redis_command_errors_total."""

    role: str
    command: str
    family: str
    error: str


class PipelineLabels(NamedTuple):
    """A series of kestrel_redis_pipeline_commands."""

    role: str
    kind: str  # PIPELINE or MULTI


@dataclass(slots=True)
class _Series:
    """One command series' figures since the last flush: commands, and the latency of
    its round trips (their seconds, their count per LATENCY_BUCKETS bucket, then +Inf)."""

    commands: int
    seconds: float
    buckets: list[int]


@dataclass(slots=True)
class _Totals:
    """The summary's running totals; round trips and their seconds leave blocking commands out."""

    commands: int = 0
    errors: int = 0
    round_trips: int = 0
    seconds: float = 0.0


class SummaryWindow(TypedDict):
    """The summary line's figures since the previous line."""

    commands: int
    errors: int
    error_rate_pct: float
    avg_ms: float
    round_trips: int
    seconds: float


class Summary(TypedDict):
    """The summary line logged every SUMMARY_EVERY commands (kestrel.redis.summary, JSON)."""

    event: str
    ts: str
    pid: int
    commands: int
    avg_ms: float
    error_rate_pct: float
    errors: int
    round_trips: int
    window: SummaryWindow


class _Recorder:
    """This process's figures since the last flush, and the summary's running totals.

    One lock and one dict update per round trip; core.metrics flushes the sums to
    prometheus-client (whose values are per-process files under gunicorn).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[CommandLabels, _Series] = {}
        self._errors: dict[ErrorLabels, int] = {}
        self._pipelines: dict[PipelineLabels, metrics.Observations] = {}  # commands per round trip
        self._totals = _Totals()
        self._last_summary = (_Totals(), time.perf_counter())  # the totals at the last summary, and when
        self._next_summary = SUMMARY_EVERY

    def forget(self) -> None:
        """A forked child (an RQ work-horse) must not report its parent's unflushed figures."""
        self._lock = threading.Lock()
        self._series, self._errors, self._pipelines = {}, {}, {}

    def _slot(self, key: CommandLabels) -> _Series:
        """The series' figures, created empty; the lock is held."""
        slot = self._series.get(key)
        if slot is None:
            slot = self._series[key] = _Series(0, 0.0, [0] * (len(LATENCY_BUCKETS) + 1))
        return slot

    def record_one(self, role: str, name: str, family: str, started: float, blocking: bool) -> None:
        """One command answered without error: the hot path, kept short."""
        now = time.perf_counter()
        seconds = now - started
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        with self._lock:
            slot = self._series.get((role, name, family))
            if slot is None:
                slot = self._slot((role, name, family))
            slot.commands += 1
            slot.seconds += seconds
            slot.buckets[bucket] += 1
            totals = self._totals
            totals.commands += 1
            if not blocking:
                totals.round_trips += 1
                totals.seconds += seconds
            summary = self._summary_locked() if totals.commands >= self._next_summary else None
        if summary is not None:
            summary_logger.info(json.dumps(summary, separators=(",", ":")))
        metrics.flush_if_due(now)

    def record(
        self,
        role: str,
        name: str,
        family: str,
        started: float,
        blocking: bool,
        commands: list[tuple[str, str]] | None = None,
        errors: list[FailedCommand] | None = None,
    ) -> None:
        """Any round trip: a command, or a pipeline (`commands`: each one's command and
        family) under name PIPELINE/MULTI. `errors` holds each command that failed."""
        now = time.perf_counter()
        seconds = now - started
        bucket = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        n_errors = len(errors) if errors else 0
        with self._lock:
            if commands is None:
                n_commands = 1
                self._slot((role, name, family)).commands += 1
            else:
                n_commands = len(commands)
                for command, command_family in commands:
                    self._slot((role, command, command_family)).commands += 1
                kind = PipelineLabels(role, name)
                sizes = self._pipelines.get(kind)
                if sizes is None:
                    sizes = self._pipelines[kind] = metrics.Observations(0.0, [0] * (len(PIPELINE_BUCKETS) + 1))
                sizes.total += n_commands
                sizes.buckets[bisect.bisect_left(PIPELINE_BUCKETS, n_commands)] += 1
            slot = self._slot((role, name, family))
            slot.seconds += seconds
            slot.buckets[bucket] += 1
            for failed in errors or ():
                labels = ErrorLabels(role, failed.command, failed.family, failed.error)
                self._errors[labels] = self._errors.get(labels, 0) + 1
            totals = self._totals
            totals.commands += n_commands
            totals.errors += n_errors
            if not blocking:
                totals.round_trips += 1
                totals.seconds += seconds
            summary = self._summary_locked() if totals.commands >= self._next_summary else None
        if summary is not None:
            summary_logger.info(json.dumps(summary, separators=(",", ":")))
        metrics.flush_if_due(now)

    def _summary_locked(self) -> Summary:
        totals = self._totals
        last, started = self._last_summary
        w_commands, w_errors = totals.commands - last.commands, totals.errors - last.errors
        w_round_trips, w_seconds = totals.round_trips - last.round_trips, totals.seconds - last.seconds
        now = time.perf_counter()
        self._last_summary = (replace(totals), now)
        self._next_summary = (totals.commands // SUMMARY_EVERY + 1) * SUMMARY_EVERY
        return {
            "event": "redis.commands",
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "pid": os.getpid(),
            # The reference article's three figures, since this process started...
            "commands": totals.commands,
            "avg_ms": _ms(totals.seconds, totals.round_trips),
            "error_rate_pct": _pct(totals.errors, totals.commands),
            "errors": totals.errors,
            "round_trips": totals.round_trips,
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
        for command, slot in series.items():
            if slot.commands:
                COMMANDS.labels(*command).inc(slot.commands)
            if any(slot.buckets):
                metrics.observe_many(LATENCY.labels(*command), slot.seconds, slot.buckets)
        for failed, count in errors.items():
            ERRORS.labels(*failed).inc(count)
        for kind, sizes in pipelines.items():
            metrics.observe_many(PIPELINE_SIZE.labels(*kind), sizes.total, sizes.buckets)


def _ms(seconds: float, round_trips: int) -> float:
    return round(seconds / round_trips * 1000, 3) if round_trips else 0.0


def _pct(part: int, whole: int) -> float:
    return round(part / whole * 100, 2) if whole else 0.0


recorder = _Recorder()
metrics.register(recorder)


# --- The client hook ----------------------------------------------------------------

# redis-py leaves execute_command, immediate_execute_command, raise_first_error and some
# pools' __init__ unannotated. pyproject's untyped_calls_exclude lets typed code call
# them, but mypy does not apply it to a call through super() or on a subclass
# (python/mypy#16653, #16651): those calls below carry a named ignore.


def _role_of(client_name: str | None) -> str:
    # The pools of core.redis name their connections kestrel-<role>; feeds.sse's
    # subscriber pool (kestrel-sse) is on the state role.
    roles = {"kestrel-state": "state", "kestrel-cache": "cache", "kestrel-queue": "queue", "kestrel-sse": "state"}
    return roles.get(client_name or "", "other")


def _pool_role(pool: Any) -> str:
    return _role_of(pool.connection_kwargs.get("client_name"))


def _mark_recorded(exc: BaseException) -> None:
    try:
        exc._kestrel_recorded = True  # type: ignore[attr-defined]
    except AttributeError:  # an exception type without a __dict__
        pass


def _not_sent(exc: BaseException) -> bool:
    """The call failed before its command was sent: the connection could not be opened
    (already recorded as a CONNECT error), or the role's circuit breaker refused it."""
    if isinstance(exc, CircuitOpen):
        return True
    return getattr(exc, "_kestrel_recorded", False) or getattr(exc.__context__, "_kestrel_recorded", False)


def _record_failure(role: str, name: str, family: str, started: float, blocking: bool, exc: BaseException) -> None:
    """A single command that raised: an error reply, or lost on the wire."""
    if not _not_sent(exc):
        recorder.record(role, name, family, started, blocking, errors=[FailedCommand(name, family, _label(exc))])


_MULTI: Classified = ("MULTI", "none", False)
_EXEC: Classified = ("EXEC", "none", False)


def _record_batch(
    role: str, batch: list[Classified], transaction: bool, started: float, errors: list[FailedCommand] | None
) -> None:
    if len(batch) == 1:  # a pipeline of one command is that command on the wire
        name, family, blocking = batch[0]
        recorder.record(role, name, family, started, blocking, errors=errors)
        return
    families = {family for _, family, _ in batch if family != "none"}
    family = families.pop() if len(families) == 1 else ("mixed" if families else "none")
    commands = [(name, command_family) for name, command_family, _ in batch]
    recorder.record(role, "MULTI" if transaction else "PIPELINE", family, started, False, commands, errors)


def _failed_replies(
    batch: list[Classified], response: list[Any], transaction: bool, error: type[BaseException]
) -> list[FailedCommand]:
    """The commands of a pipeline's `batch` whose reply in `response` is an `error` (a
    transaction's batch starts with its MULTI, which has no reply of its own there)."""
    offset = 1 if transaction else 0
    return [
        FailedCommand(batch[index + offset][0], batch[index + offset][1], _label(item))
        for index, item in enumerate(response)
        if isinstance(item, error)
    ]


class InstrumentedRedis(Redis):
    """redis-py's client, recording every command it sends; its pipelines and pub/sub too.

    Only redis-py's public names: execute_command, pipeline() and pubsub() here; a
    pipeline's execute, immediate_execute_command, command_stack and raise_first_error.
    A command refused before it is sent (a connection that cannot be opened, the circuit
    breaker) is not counted.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kestrel_role = _pool_role(self.connection_pool)

    def execute_command(self, *args: Any, **options: Any) -> Any:
        started = time.perf_counter()
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
        if family is None or described is None:
            name, family, blocking = classify(args)
        else:
            name, blocking = described[0], described[4]
        try:
            response = super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except BaseException as exc:
            _record_failure(self._kestrel_role, name, family, started, blocking, exc)
            raise
        recorder.record_one(self._kestrel_role, name, family, started, blocking)
        return response

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> InstrumentedPipeline:
        return InstrumentedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

    def pubsub(self, **kwargs: Any) -> InstrumentedPubSub:
        # Without the client's event dispatcher: a PubSub makes its own, with the same
        # default listeners (re-authentication), and the client's is not public.
        return InstrumentedPubSub(self.connection_pool, **kwargs)


class InstrumentedPipeline(Pipeline):
    """A pipeline or MULTI/EXEC: one round trip, its commands counted one each.

    Commands sent at once (WATCH and what follows it, redis-py's SCRIPT EXISTS) are
    single commands. Errors are per command: a reply that is an error counts against
    its command, a round trip lost on the wire against each of its commands.
    """

    # Pipeline.__init__ sets `transaction`, a bool, over the method Redis.transaction,
    # which is all redis-py's annotations tell of that name.
    transaction: bool  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kestrel_role = _pool_role(self.connection_pool)

    def immediate_execute_command(self, *args: Any, **options: Any) -> Any:
        started = time.perf_counter()
        name, family, blocking = classify(args)
        try:
            response = super().immediate_execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except BaseException as exc:
            _record_failure(self._kestrel_role, name, family, started, blocking, exc)
            raise
        recorder.record_one(self._kestrel_role, name, family, started, blocking)
        return response

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = self.command_stack
        transaction = self.transaction or self.explicit_transaction
        batch = [classify(args) for args, _ in stack]
        if transaction and (batch or self.watching):
            batch = [_MULTI, *batch, _EXEC]
        if not batch:
            return super().execute(raise_on_error)  # nothing to send
        started = time.perf_counter()
        try:
            # Every reply, errors included, so that each failed command is counted;
            # the first error is raised below as redis-py would have.
            response = super().execute(raise_on_error=False)
        except BaseException as exc:
            self._kestrel_failed(batch, transaction, started, exc)
            raise
        errors = _failed_replies(batch, response, transaction, ResponseError)
        _record_batch(self._kestrel_role, batch, transaction, started, errors or None)
        if errors and raise_on_error:
            self.raise_first_error(stack, response)  # type: ignore[no-untyped-call]
        return response

    def _kestrel_failed(self, batch: list[Classified], transaction: bool, started: float, exc: BaseException) -> None:
        if _not_sent(exc):
            return
        cause = exc.__context__ if isinstance(exc, WatchError) else exc
        errors: list[FailedCommand] | None
        if cause is None:  # EXEC answered nil (a watched key changed): not an error
            errors = None
        elif isinstance(cause, ResponseError):  # the block refused as a whole (EXECABORT)
            name, family = ("MULTI", "none") if transaction else batch[0][:2]
            errors = [FailedCommand(name, family, _label(cause))]
        else:  # lost on the wire: every command of the round trip
            errors = [FailedCommand(name, family, _label(cause)) for name, family, _ in batch]
        _record_batch(self._kestrel_role, batch, transaction, started, errors)


class _CountedPubSubCommands:
    """A pub/sub's commands (SUBSCRIBE, UNSUBSCRIBE, PING...) counted under its role; messages
    are not. Their replies arrive as messages, read later: the time recorded is the sending."""

    _kestrel_role: str

    def execute_command(self, *args: Any) -> None:
        started = time.perf_counter()
        name, family, blocking = classify(args)
        try:
            super().execute_command(*args)  # type: ignore[misc]  # PubSub or ClusterPubSub, after this in the MRO
        except BaseException as exc:
            _record_failure(self._kestrel_role, name, family, started, blocking, exc)
            raise
        recorder.record_one(self._kestrel_role, name, family, started, blocking)


class InstrumentedPubSub(_CountedPubSubCommands, PubSub):
    """A role's pub/sub, its commands counted (_CountedPubSubCommands)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kestrel_role = _pool_role(self.connection_pool)


def redis_client(*args: Any, **kwargs: Any) -> Redis:
    """A client for django-redis (REDIS_CLIENT_CLASS): InstrumentedRedis, or redis-py's
    own Redis when KESTREL_REDIS_METRICS_ENABLED is off (no hook at all)."""
    return (InstrumentedRedis if enabled() else Redis)(*args, **kwargs)


# --- A cluster role's client (core.cluster) ----------------------------------------


class InstrumentedClusterPipeline(KestrelClusterPipeline):
    """A cluster pipeline or MULTI/EXEC, recorded as InstrumentedPipeline records one.

    redis-py sends a cluster pipeline as one round trip per node, in turn: it is recorded
    as one, its commands one each. Commands sent at once (WATCH and what follows it in a
    transaction) are single commands. The queued commands are read from redis-py's
    execution strategy, the one place a cluster pipeline keeps them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kestrel_role = _role_of(self.nodes_manager.connection_kwargs.get("client_name"))

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        queued = len(self)
        started = time.perf_counter()
        name, family, blocking = classify(args)
        try:
            response = super().execute_command(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisError as exc:  # not RedisClusterException: refused before sending
            if len(self) == queued:
                _record_failure(self._kestrel_role, name, family, started, blocking, exc)
            raise
        if len(self) == queued:  # sent at once, not queued
            recorder.record_one(self._kestrel_role, name, family, started, blocking)
        return response

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        transaction = isinstance(self._execution_strategy, TransactionStrategy)
        stack = [command.args for command in self._execution_strategy.command_queue]
        batch = [classify(args) for args in stack]
        if not batch:
            return super().execute(raise_on_error)  # nothing to send
        if transaction:
            batch = [_MULTI, *batch, _EXEC]
        started = time.perf_counter()
        try:
            # Every reply, errors included, so that each failed command is counted;
            # the first error is raised below as redis-py would have.
            response = super().execute(raise_on_error=False)
        except WatchError:  # EXEC answered nil (a watched key changed): not an error
            _record_batch(self._kestrel_role, batch, transaction, started, None)
            raise
        except RedisError as exc:
            if not _not_sent(exc):
                errors = [FailedCommand(name, family, _label(exc)) for name, family, _ in batch]
                _record_batch(self._kestrel_role, batch, transaction, started, errors)
            raise
        errors = _failed_replies(batch, response, transaction, Exception)
        _record_batch(self._kestrel_role, batch, transaction, started, errors or None)
        if errors and raise_on_error:
            index, first = next((index, item) for index, item in enumerate(response) if isinstance(item, Exception))
            self.annotate_exception(first, index + 1, stack[index])  # type: ignore[no-untyped-call]
            raise first
        return response


class InstrumentedClusterPubSub(_CountedPubSubCommands, ClusterPubSub):
    """A cluster role's pub/sub, its commands counted as InstrumentedPubSub counts them."""

    def __init__(self, redis_cluster: RedisCluster, *args: Any, **kwargs: Any) -> None:
        super().__init__(redis_cluster, *args, **kwargs)
        self._kestrel_role = _role_of(redis_cluster.nodes_manager.connection_kwargs.get("client_name"))


class InstrumentedRedisCluster(KestrelCluster):
    """A cluster role's client, recording every command as InstrumentedRedis does.

    A command is counted once, whichever nodes it went to (PING to every primary) and
    however redis-py followed the cluster's redirections; its pipelines and pub/sub too.
    """

    pipeline_class = InstrumentedClusterPipeline
    pubsub_class = InstrumentedClusterPubSub

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set first: building the client sends COMMAND (redis-py's key-position table).
        self._kestrel_role = _role_of(kwargs.get("client_name"))
        super().__init__(*args, **kwargs)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        name, family, blocking = classify(args)
        try:
            response = super().execute_command(*args, **kwargs)
        except BaseException as exc:
            _record_failure(self._kestrel_role, name, family, started, blocking, exc)
            raise
        recorder.record_one(self._kestrel_role, name, family, started, blocking)
        return response


def redis_cluster_client(**kwargs: Any) -> RedisCluster:
    """A cluster role's client for core.cluster (REDIS_CLIENT_CLASS): InstrumentedRedisCluster,
    or KestrelCluster when KESTREL_REDIS_METRICS_ENABLED is off."""
    return (InstrumentedRedisCluster if enabled() else KestrelCluster)(**kwargs)


# --- Opening connections (CONNECT) -------------------------------------------------


class InstrumentedConnectionMixin:
    """Records each attempt to open a connection, handshake included, as CONNECT.

    While Redis is down that is where the errors are: a pool connects before a command
    is written. redis-py has no public hook that sees an attempt fail, so this wraps
    connect_check_health, which connect() and a reconnect inside a command both call:
    the one redis-py internal Kestrel relies on (tests/core/test_instrumentation fails
    when redis-py stops calling it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kestrel_role = _role_of(getattr(self, "client_name", None))

    def connect_check_health(self, *args: Any, **kwargs: Any) -> Any:
        if self.is_connected:  # type: ignore[attr-defined]
            return super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        started = time.perf_counter()
        try:
            result = super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except BaseException as exc:
            errors = [FailedCommand("CONNECT", "none", _label(exc))]
            recorder.record(self._kestrel_role, "CONNECT", "none", started, True, errors=errors)
            _mark_recorded(exc)
            raise
        # Out of the summary's average (as blocking commands are): a connect is not a round trip.
        recorder.record(self._kestrel_role, "CONNECT", "none", started, True)
        return result


class InstrumentedConnection(InstrumentedConnectionMixin, Connection):
    """A plain TCP connection that records CONNECT (for a pool's connection_class)."""


_classes: dict[type, type] = {Connection: InstrumentedConnection}
_classes_lock = threading.Lock()


def instrumented(connection_class: type) -> type:
    """The CONNECT-recording subclass of a redis-py connection class (TCP, TLS, unix socket).

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
                {"__module__": __name__, "__doc__": f"{connection_class.__name__} recording CONNECT."},
            )
            _classes[connection_class] = cls
        return cls


class InstrumentedConnectionPool(ConnectionPool):
    """ConnectionPool whose connections record CONNECT.

    A pool class rather than a `connection_class` argument: from_url picks the class
    from the URL (rediss:// is TLS, unix:// a socket), which an explicit argument would
    override; this keeps the URL's choice and instruments it.
    """

    def __init__(self, connection_class: type = Connection, **kwargs: Any) -> None:
        super().__init__(connection_class=instrumented(connection_class), **kwargs)


class InstrumentedBlockingConnectionPool(BlockingConnectionPool):
    """BlockingConnectionPool whose connections record CONNECT (see above)."""

    def __init__(self, connection_class: type = Connection, **kwargs: Any) -> None:
        super().__init__(connection_class=instrumented(connection_class), **kwargs)  # type: ignore[no-untyped-call]


class InstrumentedSentinelConnectionPool(SentinelConnectionPool):
    """SentinelConnectionPool whose Sentinel-managed connections record CONNECT."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        # from_url names SSLConnection for rediss://; behind Sentinel that must be the
        # Sentinel-managed TLS class, or failovers would not be followed.
        given = kwargs.pop("connection_class", None)
        tls = kwargs.pop("ssl", False) or (given is not None and issubclass(given, SSLConnection))
        managed = SentinelManagedSSLConnection if tls else SentinelManagedConnection
        super().__init__(  # type: ignore[no-untyped-call]
            service_name, sentinel_manager, connection_class=instrumented(managed), **kwargs
        )
