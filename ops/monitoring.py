"""What /metrics reports to Prometheus, and the job figures /healthz reports (views: ops.views).

/metrics (Prometheus text, OpenMetrics when asked) joins prometheus-client's default registry
(core.metrics: Redis commands, HTTP requests, cache and other counters, process figures; under
gunicorn every worker's, summed from the per-process files) and figures read from Redis at
scrape time: each role's server (INFO, SLOWLOG length, eviction policy; the queue role's only
when it is not the state role's database) and RQ on the queue role (jobs per queue and state,
oldest queued job, workers alive). Staff or a bearer token may read it (ops.views).

A role on Redis Cluster (ops.nodes) is up when every primary answered; its kestrel_redis_*
figures are then the sum over its primaries (one sample per policy if they disagree), and
each node has its own as kestrel_redis_node_* {role, node}, with kestrel_redis_node_info
(primary or replica, and a replica's primary) and kestrel_redis_node_slots. A node's rate
of commands and its hit ratio are Prometheus's to compute, from its counters.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from redis.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError
from rq.job import Job
from rq.queue import Queue
from rq.registry import (
    BaseRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.utils import utcparse
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from core import metrics
from core.redis import RedisClient, Role, get_redis, reported_roles
from ops.nodes import ask_each, role_nodes, summed_info

logger = logging.getLogger(__name__)

# RQ's registries, read with ZCARD: entries past their TTL stay until RQ's own cleanup
# (KestrelWorker runs it every MAINTENANCE_INTERVAL), which a scrape must not trigger.
RQ_REGISTRIES: dict[str, type[BaseRegistry]] = {
    "started": StartedJobRegistry,
    "scheduled": ScheduledJobRegistry,
    "deferred": DeferredJobRegistry,
    "failed": FailedJobRegistry,
    "finished": FinishedJobRegistry,
}
DEFAULT_MAX_BACKLOG = 1000  # queued jobs /healthz accepts (KESTREL_HEALTH_MAX_BACKLOG)


# --- RQ figures ---------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFigures:
    queued: int
    started: int
    scheduled: int
    deferred: int
    failed: int
    finished: int
    workers: int  # alive workers listening on this queue
    oldest_age_seconds: float  # of the job at the head of the queue; 0 when empty


@dataclass(frozen=True)
class RQSnapshot:
    queues: dict[str, QueueFigures] = field(default_factory=dict)
    workers: int = 0  # alive: registered and still heartbeating (their key has not expired)
    registered_workers: int = 0

    @property
    def backlog(self) -> int:
        return sum(queue.queued for queue in self.queues.values())


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def rq_snapshot(client: RedisClient | None = None, *, now: datetime | None = None) -> RQSnapshot:
    """Every queue of settings.RQ_QUEUES, its registries and workers, in two round trips.

    Read from the queue role unless `client` is given. A worker counts as alive while its
    key exists: RQ renews it with each heartbeat and lets it expire (worker TTL + 60 s)
    when the worker dies without unregistering.
    """
    client = client or get_redis("queue")
    now = now or datetime.now(UTC)
    names = list(settings.RQ_QUEUES)

    pipe = client.pipeline(transaction=False)
    for name in names:
        queue_key = Queue.redis_queue_namespace_prefix + name
        pipe.llen(queue_key)
        pipe.lindex(queue_key, 0)  # RQ pushes on the right and pops on the left: the oldest
        for registry in RQ_REGISTRIES.values():
            pipe.zcard(registry.key_template.format(name))
        pipe.smembers(WORKERS_BY_QUEUE_KEY % name)
    pipe.smembers(REDIS_WORKER_KEYS)
    replies = pipe.execute()

    per_queue = 3 + len(RQ_REGISTRIES)
    raw = {name: replies[i * per_queue : (i + 1) * per_queue] for i, name in enumerate(names)}
    registered = {_text(key) for key in replies[-1]}
    queue_workers = {name: {_text(key) for key in raw[name][-1]} for name in names}
    worker_keys = sorted(registered.union(*queue_workers.values()))
    heads = {name: _text(raw[name][1]) for name in names if raw[name][1] is not None}

    pipe = client.pipeline(transaction=False)
    for key in worker_keys:
        pipe.exists(key)
    for job_id in heads.values():
        pipe.hget(Job.key_for(job_id), "enqueued_at")
    replies = pipe.execute() if worker_keys or heads else []
    alive = {key for key, exists in zip(worker_keys, replies, strict=False) if exists}
    enqueued = dict(zip(heads, replies[len(worker_keys) :], strict=True))

    queues = {}
    for name in names:
        queued, _head, *counts, _members = raw[name]
        oldest = 0.0
        if enqueued.get(name):
            try:
                oldest = max(0.0, (now - utcparse(_text(enqueued[name]))).total_seconds())
            except ValueError:
                pass  # a job written by another RQ version: no age rather than no figures
        registries = dict(zip(RQ_REGISTRIES, counts, strict=True))
        queues[name] = QueueFigures(
            queued=queued,
            workers=len(queue_workers[name] & alive),
            oldest_age_seconds=oldest,
            **registries,
        )
    return RQSnapshot(queues=queues, workers=len(registered & alive), registered_workers=len(registered))


def jobs_status(client: RedisClient | None = None) -> dict:
    """The jobs part of /healthz: workers alive and the queue backlog.

    `ok` is false when no worker is alive or more than KESTREL_HEALTH_MAX_BACKLOG jobs
    wait. It is for people and alerts, not for the load balancer: a stopped worker must
    not take the web servers out of rotation, so /healthz keeps its status code.
    """
    started = time.perf_counter()
    try:
        snapshot = rq_snapshot(client)
    except RedisError as exc:
        return {
            "ok": False,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "error": f"{type(exc).__name__}: {exc}",
        }
    max_backlog = getattr(settings, "KESTREL_HEALTH_MAX_BACKLOG", DEFAULT_MAX_BACKLOG)
    problems = []
    if snapshot.workers == 0:
        problems.append("no RQ worker is alive")
    if snapshot.backlog > max_backlog:
        problems.append(f"{snapshot.backlog} jobs queued (more than {max_backlog})")
    body = {
        "ok": not problems,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        "workers": snapshot.workers,
        "backlog": snapshot.backlog,
        "queues": {
            name: {
                "queued": queue.queued,
                "oldest_seconds": round(queue.oldest_age_seconds, 1),
                "started": queue.started,
                "scheduled": queue.scheduled,
                "failed": queue.failed,
                "workers": queue.workers,
            }
            for name, queue in snapshot.queues.items()
        },
    }
    if problems:
        body["problems"] = problems
    return body


# --- Scrape-time collector ----------------------------------------------------------


# INFO fields /metrics reads, as gauges and counters: field -> (name after kestrel_redis_, help).
_INFO_GAUGES = {
    "used_memory": ("memory_used_bytes", "Memory Redis has allocated (INFO used_memory)."),
    "maxmemory": ("memory_max_bytes", "maxmemory; 0 means no limit."),
    "connected_clients": ("connected_clients", "Client connections to the server."),
}
_INFO_COUNTERS = {
    "evicted_keys": ("evicted_keys", "Keys evicted under maxmemory (server-wide)."),
    "expired_keys": ("expired_keys", "Keys removed by their TTL (server-wide)."),
    "keyspace_hits": ("keyspace_hits", "Lookups that found their key (server-wide)."),
    "keyspace_misses": ("keyspace_misses", "Lookups that did not (server-wide)."),
    "total_commands_processed": ("server_commands_processed", "Commands the server ran, from every client."),
}
_ON_A_NODE = " One node of a cluster role."


class _ServerFamilies:
    """The families of one role's server, or (`node=True`) of each node of a cluster role."""

    def __init__(self, *, node: bool = False) -> None:
        prefix, labels, suffix = (
            ("kestrel_redis_node_", ["role", "node"], _ON_A_NODE) if node else ("kestrel_redis_", ["role"], "")
        )
        self.up = GaugeMetricFamily(
            f"{prefix}up", f"1 when the role's Redis answered this scrape.{suffix}", labels=labels
        )
        self.gauges = {
            field: GaugeMetricFamily(prefix + name, text + suffix, labels=labels)
            for field, (name, text) in _INFO_GAUGES.items()
        }
        self.counters = {
            field: CounterMetricFamily(prefix + name, text + suffix, labels=labels)
            for field, (name, text) in _INFO_COUNTERS.items()
        }
        self.keys = GaugeMetricFamily(f"{prefix}keys", f"Keys in the role's database.{suffix}", labels=labels)
        self.slowlog = GaugeMetricFamily(
            f"{prefix}slowlog_entries",
            f"Entries in the server's SLOWLOG (see manage.py redis_audit).{suffix}",
            labels=labels,
        )
        self.policy = GaugeMetricFamily(
            f"{prefix}maxmemory_policy_info", f"The server's eviction policy.{suffix}", labels=[*labels, "policy"]
        )

    def add(self, labels: list[str], info: dict, db: int, slowlog_len: int) -> None:
        """One server's figures (or a cluster role's sum over its primaries: ops.nodes.summed_info)."""
        for name, gauge in self.gauges.items():
            gauge.add_metric(labels, float(info.get(name, 0)))
        for name, counter in self.counters.items():
            counter.add_metric(labels, float(info.get(name, 0)))
        self.keys.add_metric(labels, float((info.get(f"db{db}") or {}).get("keys", 0)))
        self.slowlog.add_metric(labels, float(slowlog_len))
        # A cluster role's primaries that disagree give one sample per policy.
        for policy in str(info.get("maxmemory_policy", "unknown")).split(", "):
            self.policy.add_metric([*labels, policy], 1)

    def families(self) -> list:
        return [self.up, *self.gauges.values(), *self.counters.values(), self.keys, self.slowlog, self.policy]


class _NodeFamilies(_ServerFamilies):
    """Each node of the cluster roles: its server figures, its part (primary or replica) and the slots it serves."""

    def __init__(self) -> None:
        super().__init__(node=True)
        self.info = GaugeMetricFamily(
            "kestrel_redis_node_info",
            "A node of a cluster role: node_role is primary or replica; replica_of names a replica's primary.",
            labels=["role", "node", "node_role", "replica_of"],
        )
        self.slots = GaugeMetricFamily(
            "kestrel_redis_node_slots",
            "Hash slots the node serves (a primary's; 0 for a replica).",
            labels=["role", "node"],
        )

    def families(self) -> list:
        return [self.info, self.slots, *super().families()]

    def add_role(self, role: Role, client: RedisCluster, servers: _ServerFamilies) -> bool:
        """Every node's figures, and the role's (in `servers`) summed over its primaries if each
        answered: whether they did."""
        primaries: list[tuple[dict, int]] = []
        missing = []
        for node, replies in ask_each(role_nodes(client), lambda pipe: (pipe.info(), pipe.slowlog_len())):
            labels = [role, node.address]
            self.info.add_metric([*labels, node.kind, node.replica_of], 1)
            self.slots.add_metric(labels, node.slot_count)
            if isinstance(replies, Exception):
                logger.warning("metrics: node %s of the %s role did not answer: %s", node.address, role, replies)
                self.up.add_metric(labels, 0)
                if node.primary:
                    missing.append(node.address)
                continue
            info, slowlog_len = replies
            slowlog_len = 0 if isinstance(slowlog_len, ResponseError) else slowlog_len  # SLOWLOG may be refused
            self.up.add_metric(labels, 1)
            self.add(labels, info, 0, slowlog_len)  # a cluster has database 0 only
            if node.primary:
                primaries.append((info, slowlog_len))
        if missing or not primaries:
            servers.up.add_metric([role], 0)
            return False
        servers.up.add_metric([role], 1)
        total = summed_info(info for info, _ in primaries)
        servers.add([role], total, 0, sum(slowlog_len for _, slowlog_len in primaries))
        return True


def _redis_server_families(roles: dict[Role, RedisClient]) -> tuple[list, set[Role]]:
    """Each role's server figures (INFO and SLOWLOG LEN in one round trip; a cluster's
    node by node, and their sum over the primaries); the roles down."""
    servers = _ServerFamilies()
    nodes: _NodeFamilies | None = None
    down = set()
    for role, client in roles.items():
        if isinstance(client, RedisCluster):
            nodes = nodes or _NodeFamilies()
            if not nodes.add_role(role, client, servers):
                down.add(role)
            continue
        try:
            pipe = client.pipeline(transaction=False)
            pipe.info()
            pipe.slowlog_len()
            info, slowlog_len = pipe.execute()
        except RedisError as exc:
            logger.warning("metrics: the %s role's Redis did not answer: %s", role, exc)
            servers.up.add_metric([role], 0)
            down.add(role)
            continue
        servers.up.add_metric([role], 1)
        servers.add([role], info, client.connection_pool.connection_kwargs.get("db", 0), slowlog_len)
    return [*servers.families(), *(nodes.families() if nodes else ())], down


def _rq_families(client: RedisClient) -> list:
    snapshot = rq_snapshot(client)
    jobs = GaugeMetricFamily("kestrel_rq_jobs", "RQ jobs per queue and state.", labels=["queue", "state"])
    oldest = GaugeMetricFamily(
        "kestrel_rq_oldest_job_age_seconds", "Age of the oldest queued job; 0 if none.", labels=["queue"]
    )
    queue_workers = GaugeMetricFamily(
        "kestrel_rq_queue_workers", "Alive RQ workers listening on a queue.", labels=["queue"]
    )
    for name, queue in snapshot.queues.items():
        for state in ("queued", *RQ_REGISTRIES):
            jobs.add_metric([name, state], getattr(queue, state))
        oldest.add_metric([name], queue.oldest_age_seconds)
        queue_workers.add_metric([name], queue.workers)
    workers = GaugeMetricFamily("kestrel_rq_workers", "RQ workers alive (heartbeating).", value=snapshot.workers)
    registered = GaugeMetricFamily(
        "kestrel_rq_workers_registered",
        "RQ workers registered, dead ones included until RQ cleans them up.",
        value=snapshot.registered_workers,
    )
    return [jobs, oldest, queue_workers, workers, registered]


class KestrelCollector:
    """What /metrics reads from Redis at scrape time (the roles' servers, RQ)."""

    def __init__(self, roles: dict[Role, RedisClient] | None = None) -> None:
        self.roles = roles

    def collect(self):
        roles = self.roles or {role: get_redis(role) for role in reported_roles()}
        families, down = _redis_server_families(roles)
        yield from families
        # RQ lives on the queue role: reported apart, or as the state role's database.
        server: Role = "queue" if "queue" in roles else "state"
        if server in roles and server not in down:
            try:
                yield from _rq_families(roles.get("queue") or get_redis("queue"))
            except RedisError as exc:
                logger.warning("metrics: RQ figures unavailable: %s", exc)


class _KestrelFigures:
    """core.metrics.registry() as a collector: this process's figures flushed at each scrape."""

    def collect(self):
        return metrics.registry().collect()


def build_registry(roles: dict[Role, RedisClient] | None = None) -> CollectorRegistry:
    """The registry one scrape reads (built per scrape: the Redis figures are live)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_KestrelFigures())
    registry.register(KestrelCollector(roles))
    return registry
