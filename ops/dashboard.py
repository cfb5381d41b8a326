"""The staff ops dashboard's figures (/ops), and the samples its charts are drawn from.

For a person looking at the page; on no request path but /ops. Figures come from where
/metrics and redis_audit get theirs: ops.monitoring (RQ), core.metrics (prometheus-client:
command metrics, cache counters), core.instrumentation (key families), ops.audit. Charts
need history a live INFO has not: ops.jobs.sample_ops calls ops_sample() once a minute,
which appends one entry to a capped stream on the state role (ops.keys.ops_samples_key()).
The roles shown are core.redis.reported_roles(); the queue figures come from the queue role.
A role on Redis Cluster is shown node by node (ops.nodes), its totals summed over its primaries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from redis.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from core import instrumentation, metrics
from core.redis import SAFE_STATE_POLICIES, RedisClient, get_redis, reported_roles
from ops import audit
from ops.charts import node_field
from ops.keys import ops_samples_key
from ops.monitoring import rq_snapshot
from ops.nodes import ask_each, role_nodes, summed_info

logger = logging.getLogger(__name__)

# XRANGE/XREVRANGE replies of a client that does not decode: redis-py types every mode at once.
_Entries = list[tuple[bytes, dict[bytes, bytes]]]

SAMPLES_MAXLEN = 1440  # a day at one sample a minute (jobs/cron.py)
CHART_SAMPLES = 1440  # entries the charts read: the whole stream
SLOWLOG_ENTRIES = 20
TOP_COMMANDS = 15
# The page runs the audit on every view, so it reads less than the cron audit does.
DASHBOARD_AUDIT = audit.AuditOptions(max_keys=10_000, sample=200, slowlog_entries=5)
# Round trips that wait by design: left out of the average latency, as in the summary line.
NOT_ROUND_TRIPS = instrumentation.BLOCKING | {"CONNECT"}


# --- Live figures -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ServerFigures:
    """What INFO tells of one server: a role's, a cluster node's, or a cluster role's sum over its primaries."""

    used_memory: int = 0
    used_memory_human: str = ""
    maxmemory: int = 0
    maxmemory_human: str = ""
    memory_pct: float | None = None  # of maxmemory; None without a limit
    fragmentation: float = 0.0
    hit_ratio: float | None = None  # keyspace hits / lookups since the server started, %
    evicted_keys: int = 0
    expired_keys: int = 0
    connected_clients: int = 0
    ops_per_sec: int = 0
    policy: str = ""


@dataclass(frozen=True, kw_only=True)
class NodeFigures(ServerFigures):
    """One node of a cluster role (ops.nodes.RoleNode) and its INFO; `up` False with the error if it did not answer."""

    address: str
    kind: str  # primary or replica
    slot_count: int = 0
    slot_ranges: str = ""
    replica_of: str = ""
    up: bool = False
    error: str = ""


@dataclass(frozen=True, kw_only=True)
class RoleFigures(ServerFigures):
    """A role's figures; on a cluster, the sum over its primaries and each node's own (`nodes`).

    A cluster role is up when every primary answered; the nodes that did show their figures either way.
    """

    role: str
    up: bool
    error: str = ""
    policy_warning: str = ""
    run_id: str = ""  # INFO server's: the same on both roles when they share one server
    slowlog: list[dict] = field(default_factory=list)  # on a cluster, each entry names its node
    latency: list[dict] = field(default_factory=list)
    nodes: list[NodeFigures] = field(default_factory=list)  # empty for a single server


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def hit_ratio(hits: int, misses: int) -> float | None:
    return round(hits / (hits + misses) * 100, 2) if hits + misses else None


def slowlog_entry(entry: dict) -> dict:
    """One SLOWLOG entry with its command name and the key family of its first key."""
    words = tuple(_text(entry.get("command", b"")).split(" "))
    # SLOWLOG joins the arguments with spaces; a key holding a space is the rare miss.
    name, family, _ = instrumentation.classify(words) if words[0] else ("", "none", False)
    return {
        "id": entry.get("id"),
        "start_time": int(entry.get("start_time", 0)),
        "duration_us": int(entry.get("duration", 0)),
        "command": name,
        "family": family,
        # The command and its first key, redacted: the other arguments are values (a
        # session, a lock's token), and a session key's id is the session cookie.
        "args": instrumentation.redacted_command(words)[:160] if words[0] else "",
        "client": _text(entry.get("client_name", b"")),
    }


def _latency_rows(reply) -> list[dict]:
    # LATENCY LATEST: [event, timestamp of the latest spike, its ms, the all-time max ms]
    return [
        {"event": _text(row[0]), "time": int(row[1]), "latest_ms": int(row[2]), "max_ms": int(row[3])}
        for row in reply or ()
        if len(row) >= 4
    ]


# What the roles that must not evict would lose (RoleFigures.policy_warning).
_MUST_NOT_EVICT = {"state": "sessions, locks and queued jobs", "queue": "queued jobs and their results"}


def _server_figures(info: dict) -> dict:
    """ServerFigures' fields from one INFO reply (or ops.nodes.summed_info's)."""
    used, maxmemory = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0) or 0)
    return {
        "used_memory": used,
        "used_memory_human": str(info.get("used_memory_human", used)),
        "maxmemory": maxmemory,
        "maxmemory_human": str(info.get("maxmemory_human", maxmemory)) if maxmemory else "no limit",
        "memory_pct": round(used / maxmemory * 100, 1) if maxmemory else None,
        "fragmentation": float(info.get("mem_fragmentation_ratio", 0) or 0),
        "hit_ratio": hit_ratio(int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))),
        "evicted_keys": int(info.get("evicted_keys", 0)),
        "expired_keys": int(info.get("expired_keys", 0)),
        "connected_clients": int(info.get("connected_clients", 0)),
        "ops_per_sec": int(info.get("instantaneous_ops_per_sec", 0)),
        "policy": str(info.get("maxmemory_policy", "unknown")),
    }


def _policy_warning(role: str, policy: str) -> str:
    if role in _MUST_NOT_EVICT and policy not in SAFE_STATE_POLICIES:
        return f"The {role} role can evict ({policy}): {_MUST_NOT_EVICT[role]} may be lost."
    return ""


def _queue_figures(pipe) -> None:
    pipe.info()
    pipe.slowlog_get(SLOWLOG_ENTRIES)
    pipe.latency_latest()


def role_figures(role: str, client: RedisClient) -> RoleFigures:
    """INFO, SLOWLOG GET and LATENCY LATEST of one role, in one round trip (a cluster's: one a node); never raises."""
    if isinstance(client, RedisCluster):
        return _cluster_figures(role, client)
    try:
        pipe = client.pipeline(transaction=False)
        _queue_figures(pipe)
        info, slowlog, latency = pipe.execute(raise_on_error=False)
        if isinstance(info, Exception):
            raise info
    except RedisError as exc:
        # Fails open: the page shows the role as down with the rest of its figures.
        return RoleFigures(role=role, up=False, error=f"{type(exc).__name__}: {exc}")
    # A managed Redis may refuse SLOWLOG or LATENCY: shown as empty, INFO still counts.
    figures = _server_figures(info)
    return RoleFigures(
        role=role,
        up=True,
        **figures,
        policy_warning=_policy_warning(role, figures["policy"]),
        run_id=str(info.get("run_id", "")),
        slowlog=[] if isinstance(slowlog, ResponseError) else [slowlog_entry(e) for e in slowlog],
        latency=[] if isinstance(latency, ResponseError) else _latency_rows(latency),
    )


def _cluster_figures(role: str, client: RedisCluster) -> RoleFigures:
    """A cluster role's figures: each node's, and the sum over the primaries when every one answered."""
    nodes: list[NodeFigures] = []
    primaries: list[dict] = []
    slowlog: list[tuple[int, int, dict]] = []  # (-start time, rank on its node, entry)
    latency: list[dict] = []
    down: list[str] = []
    for node, replies in ask_each(role_nodes(client), _queue_figures):
        where: dict[str, Any] = {
            "address": node.address,
            "kind": node.kind,
            "slot_count": node.slot_count,
            "slot_ranges": node.slot_ranges,
            "replica_of": node.replica_of,
        }
        if isinstance(replies, Exception):
            nodes.append(NodeFigures(**where, up=False, error=f"{type(replies).__name__}: {replies}"))
            if node.primary:
                down.append(f"{node.address} ({type(replies).__name__})")
            continue
        info, node_slowlog, node_latency = replies
        nodes.append(NodeFigures(**where, up=True, **_server_figures(info)))
        if node.primary:
            primaries.append(info)
        if not isinstance(node_slowlog, ResponseError):
            for rank, entry in enumerate(node_slowlog):
                shown = {**slowlog_entry(entry), "node": node.address}
                slowlog.append((-shown["start_time"], rank, shown))
        if not isinstance(node_latency, ResponseError):
            latency += [{**row, "node": node.address} for row in _latency_rows(node_latency)]
    # The newest first; within a second (SLOWLOG's resolution), each node's newest in turn.
    slowlog.sort(key=lambda ranked: ranked[:2])
    details: dict[str, Any] = {
        "nodes": nodes,
        "slowlog": [entry for _, _, entry in slowlog[:SLOWLOG_ENTRIES]],
        "latency": latency,
    }
    if down or not primaries:
        error = f"primaries that did not answer: {', '.join(down)}" if down else "no primary answered"
        return RoleFigures(role=role, up=False, error=error, **details)
    figures = _server_figures(summed_info(primaries))
    return RoleFigures(
        role=role, up=True, **figures, policy_warning=_policy_warning(role, figures["policy"]), **details
    )


def one_server(roles: list[RoleFigures]) -> bool:
    """True when the roles answered from one Redis server (different databases, as in
    development's `make run`): their INFO figures are then that one server's."""
    answered = all(figures.up and figures.run_id for figures in roles)
    return len(roles) > 1 and answered and len({figures.run_id for figures in roles}) == 1


# --- Kestrel's own figures ----------------------------------------------------------


def _metric_samples():
    """Kestrel's prometheus-client samples, as /metrics reads them (core.metrics.registry)."""
    for family in metrics.registry().collect():
        yield from family.samples


def command_metrics(*, top: int = TOP_COMMANDS) -> tuple[list[dict], dict]:
    """The `top` busiest (role, command, family) series, and totals over every series."""
    rows: dict[tuple[str, str, str], dict] = {}
    for sample in _metric_samples():
        if sample.name not in {
            "kestrel_redis_commands_total",
            "kestrel_redis_command_errors_total",
            "kestrel_redis_command_duration_seconds_sum",
            "kestrel_redis_command_duration_seconds_count",
        }:
            continue
        labels = sample.labels
        row = rows.setdefault(
            (labels["role"], labels["command"], labels["family"]),
            {"commands": 0, "errors": 0, "seconds": 0.0, "round_trips": 0},
        )
        column = {
            "kestrel_redis_commands_total": "commands",
            "kestrel_redis_command_errors_total": "errors",
            "kestrel_redis_command_duration_seconds_sum": "seconds",
            "kestrel_redis_command_duration_seconds_count": "round_trips",
        }[sample.name]
        row[column] += sample.value
    totals = {"commands": 0, "errors": 0, "seconds": 0.0, "round_trips": 0}
    table = []
    for (role, command, family), row in rows.items():
        for column in ("commands", "errors"):
            totals[column] += int(row[column])
        if command not in NOT_ROUND_TRIPS:
            totals["seconds"] += row["seconds"]
            totals["round_trips"] += int(row["round_trips"])
        if row["commands"] or row["round_trips"]:
            avg = row["seconds"] / row["round_trips"] * 1000 if row["round_trips"] else 0.0
            table.append(
                {
                    "role": role,
                    "command": command,
                    "family": family,
                    "commands": int(row["commands"]),
                    "errors": int(row["errors"]),
                    "avg_ms": round(avg, 3),
                }
            )
    table.sort(key=lambda row: row["commands"], reverse=True)
    totals["avg_ms"] = round(totals["seconds"] / totals["round_trips"] * 1000, 3) if totals["round_trips"] else 0.0
    return table[:top], totals


def cache_metrics() -> list[dict]:
    """The cache counters (kestrel_cache_*_total) per key family: hits (L1, Redis), misses, errors..."""
    families: dict[str, dict[str, int]] = {}

    def add(event: str, labels: dict, count: float) -> None:
        family = labels.get("family")
        if not family:
            return
        if event == "hit":
            event = f"hit_{labels.get('tier', 'redis')}"
        row = families.setdefault(family, {})
        row[event] = row.get(event, 0) + int(count)

    for sample in _metric_samples():
        if sample.name.startswith("kestrel_cache_") and sample.name.endswith("_total"):
            add(sample.name[len("kestrel_cache_") : -len("_total")], sample.labels, sample.value)
    rows = []
    for family, counts in sorted(families.items()):
        hits = counts.get("hit_l1", 0) + counts.get("hit_redis", 0)
        rows.append(
            {
                "family": family,
                "hit_l1": counts.get("hit_l1", 0),
                "hit_redis": counts.get("hit_redis", 0),
                "miss": counts.get("miss", 0),
                "error": counts.get("error", 0),
                "invalidation": counts.get("invalidation", 0),
                "hit_ratio": hit_ratio(hits, counts.get("miss", 0)),
            }
        )
    return rows


# --- Samples ------------------------------------------------------------------------


def _delta(current: float, previous: float | None) -> float:
    if previous is None:
        return 0.0
    # A counter lower than before was reset (a Redis or process restart): count from zero.
    return current - previous if current >= previous else current


def _sample_fields(info: dict, previous: dict[str, float], name: Callable[[str], str]) -> dict[str, float]:
    """One server's sample fields from its INFO (`name` gives each field its role's or node's name)."""
    hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    evicted = int(info.get("evicted_keys", 0))
    if name("hits") in previous:
        ratio = hit_ratio(int(_delta(hits, previous[name("hits")])), int(_delta(misses, previous.get(name("misses")))))
    else:
        ratio = hit_ratio(hits, misses)
    return {
        name("used_memory"): int(info.get("used_memory", 0)),
        name("hit_ratio"): ratio if ratio is not None else -1,  # -1: no lookups
        name("ops_per_sec"): int(info.get("instantaneous_ops_per_sec", 0)),
        name("evicted"): _delta(evicted, previous.get(name("evicted_total"))),
        name("clients"): int(info.get("connected_clients", 0)),
        name("hits"): hits,
        name("misses"): misses,
        name("evicted_total"): evicted,
    }


def _role_field(role: str, name: str) -> str:
    return f"{role}_{name}"


def _cluster_sample(role: str, client: RedisCluster, previous: dict[str, float]) -> dict[str, float]:
    """A cluster role's sample fields: each node's that answered, and the sum over the primaries if all did."""
    fields: dict[str, float] = {}
    primaries: list[dict] = []
    primary_down = False
    down = []
    for node, replies in ask_each(role_nodes(client), lambda pipe: pipe.info()):
        if isinstance(replies, Exception):
            down.append(f"{node.kind} {node.address} ({type(replies).__name__}: {replies})")
            primary_down = primary_down or node.primary
            continue
        (info,) = replies
        if node.primary:
            primaries.append(info)
        fields |= _sample_fields(info, previous, partial(node_field, role, node.address))
        fields[node_field(role, node.address, "primary")] = int(node.primary)
    if down:
        logger.warning("ops sample: nodes of the %s role did not answer: %s", role, ", ".join(down))
    if primaries and not primary_down:
        fields |= _sample_fields(summed_info(primaries), previous, partial(_role_field, role))
    return fields


def ops_sample(*, clients: dict[str, RedisClient] | None = None) -> dict[str, str]:
    """Append one sample to the capped stream on the state role; return its fields.

    Per role: used_memory, hit ratio and evictions in the interval, ops/s, clients; a
    cluster role's are the sum over its primaries, and each node's own go in too, under
    ops.charts.node_field names (with `primary`, 1 or 0).
    Kestrel: commands, average latency (ms) and errors in the interval (this process's
    figures, or every gunicorn worker's when PROMETHEUS_MULTIPROC_DIR is shared).
    Jobs: the queue backlog (queue role). A role that is down is left out of the entry (a
    gap); so are a cluster role's sums while a primary does not answer, and a node that does not.
    """
    clients = clients or {role: get_redis(role) for role in reported_roles()}
    state = clients["state"]
    stream = ops_samples_key()
    last = cast(_Entries, state.xrevrange(stream, count=1))
    previous = {_text(k): float(v) for k, v in last[0][1].items()} if last else {}
    # Each entry keeps the cumulative counters (*_hits, *_total) beside the interval
    # figures, so the next sample can take the difference.
    fields: dict[str, float] = {}

    for role, client in clients.items():
        if isinstance(client, RedisCluster):
            fields |= _cluster_sample(role, client, previous)
            continue
        try:
            info = client.info()
        except RedisError as exc:
            logger.warning("ops sample: the %s role's Redis did not answer: %s", role, exc)
            continue
        fields |= _sample_fields(info, previous, partial(_role_field, role))

    _, totals = command_metrics(top=0)
    d_round_trips = _delta(totals["round_trips"], previous.get("kestrel_round_trips_total"))
    d_seconds = _delta(totals["seconds"], previous.get("kestrel_seconds_total"))
    fields |= {
        "kestrel_commands": _delta(totals["commands"], previous.get("kestrel_commands_total")),
        "kestrel_errors": _delta(totals["errors"], previous.get("kestrel_errors_total")),
        "kestrel_avg_ms": round(d_seconds / d_round_trips * 1000, 3) if d_round_trips else 0,
        "kestrel_commands_total": totals["commands"],
        "kestrel_errors_total": totals["errors"],
        "kestrel_seconds_total": round(totals["seconds"], 6),
        "kestrel_round_trips_total": totals["round_trips"],
    }
    try:
        fields["queue_backlog"] = rq_snapshot(clients.get("queue") or get_redis("queue")).backlog
    except RedisError as exc:
        logger.warning("ops sample: the queue role's Redis did not answer: %s", exc)
    entry = {name: str(round(value, 6) if isinstance(value, float) else value) for name, value in fields.items()}
    # Two schedulers sampling together give one short interval, not wrong totals.
    state.xadd(stream, cast(dict[FieldT, EncodableT], entry), maxlen=SAMPLES_MAXLEN, approximate=True)
    return entry


def ops_series(
    *, client: RedisClient | None = None, count: int = CHART_SAMPLES
) -> dict[str, list[tuple[float, float]]]:
    """The sampled series, oldest first: field -> [(unix time, value), ...]."""
    client = client or get_redis("state")
    series: dict[str, list[tuple[float, float]]] = {}
    for entry_id, values in reversed(cast(_Entries, client.xrevrange(ops_samples_key(), count=count))):
        when = int(_text(entry_id).split("-", 1)[0]) / 1000
        for name, value in values.items():
            try:
                number = float(value)
            except ValueError:
                continue
            if number >= 0:  # -1 marks "no value" (a hit ratio with no lookups)
                series.setdefault(_text(name), []).append((when, number))
    return series


# --- The page -----------------------------------------------------------------------


@dataclass
class Dashboard:
    roles: list[RoleFigures]
    series: dict[str, list[tuple[float, float]]]
    queues: dict
    workers: int
    backlog: int
    queue_error: str
    commands: list[dict]
    command_totals: dict
    cache: list[dict]
    audit: audit.AuditReport
    generated_at: float
    one_server: bool  # every role on one Redis server: the page says their figures are shared


def ops_dashboard_get() -> Dashboard:
    """Everything /ops shows; each part fails open, so a role that is down shows as down."""
    clients = {role: get_redis(role) for role in reported_roles()}
    roles = [role_figures(role, client) for role, client in clients.items()]
    up = {figures.role for figures in roles if figures.up}
    # The queues' server: the queue role's, or the state role's when it is that database.
    queue_server = "queue" if "queue" in clients else "state"
    series, queues, workers, backlog, queue_error = {}, {}, 0, 0, ""
    try:
        if "state" in up:
            series = ops_series(client=clients["state"])
        if queue_server in up:
            snapshot = rq_snapshot(get_redis("queue"))
            queues, workers, backlog = snapshot.queues, snapshot.workers, snapshot.backlog
        else:
            queue_error = f"the {queue_server} role is unavailable"
    except RedisError as exc:
        queue_error = f"{type(exc).__name__}: {exc}"
    commands, totals = command_metrics()
    return Dashboard(
        roles=roles,
        series=series,
        queues=queues,
        workers=workers,
        backlog=backlog,
        queue_error=queue_error,
        commands=commands,
        command_totals=totals,
        cache=cache_metrics(),
        audit=audit.run_audit(DASHBOARD_AUDIT, clients=clients),
        generated_at=time.time(),
        one_server=one_server(roles),
    )
