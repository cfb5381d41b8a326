"""What /metrics reports to Prometheus, and the job figures /healthz reports (views: ops.views).

/metrics (Prometheus text, OpenMetrics when asked) joins prometheus-client's default registry
(core.metrics: Redis commands, HTTP requests, cache and other counters, process figures; under
gunicorn every worker's, summed from the per-process files) and figures read from Redis at
scrape time: each role's server (INFO, SLOWLOG length, eviction policy; the queue role's only
when it is not the state role's database) and RQ on the queue role (jobs per queue and state,
oldest queued job, workers alive). Staff or a bearer token may read it (ops.views).
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
from redis.exceptions import RedisError
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


def _redis_server_families(roles: dict[Role, RedisClient]) -> tuple[list, set[Role]]:
    """Each role's server figures (INFO and SLOWLOG LEN in one round trip); roles down."""
    up = GaugeMetricFamily("kestrel_redis_up", "1 when the role's Redis answered this scrape.", labels=["role"])
    gauges = {
        "used_memory": GaugeMetricFamily(
            "kestrel_redis_memory_used_bytes", "Memory Redis has allocated (INFO used_memory).", labels=["role"]
        ),
        "maxmemory": GaugeMetricFamily(
            "kestrel_redis_memory_max_bytes", "maxmemory; 0 means no limit.", labels=["role"]
        ),
        "connected_clients": GaugeMetricFamily(
            "kestrel_redis_connected_clients", "Client connections to the server.", labels=["role"]
        ),
    }
    counters = {
        "evicted_keys": CounterMetricFamily(
            "kestrel_redis_evicted_keys", "Keys evicted under maxmemory (server-wide).", labels=["role"]
        ),
        "expired_keys": CounterMetricFamily(
            "kestrel_redis_expired_keys", "Keys removed by their TTL (server-wide).", labels=["role"]
        ),
        "keyspace_hits": CounterMetricFamily(
            "kestrel_redis_keyspace_hits", "Lookups that found their key (server-wide).", labels=["role"]
        ),
        "keyspace_misses": CounterMetricFamily(
            "kestrel_redis_keyspace_misses", "Lookups that did not (server-wide).", labels=["role"]
        ),
        "total_commands_processed": CounterMetricFamily(
            "kestrel_redis_server_commands_processed", "Commands the server ran, from every client.", labels=["role"]
        ),
    }
    keys = GaugeMetricFamily("kestrel_redis_keys", "Keys in the role's database.", labels=["role"])
    slowlog = GaugeMetricFamily(
        "kestrel_redis_slowlog_entries", "Entries in the server's SLOWLOG (see manage.py redis_audit).", labels=["role"]
    )
    policy = GaugeMetricFamily(
        "kestrel_redis_maxmemory_policy_info", "The server's eviction policy.", labels=["role", "policy"]
    )
    down = set()
    for role, client in roles.items():
        try:
            pipe = client.pipeline(transaction=False)
            pipe.info()
            pipe.slowlog_len()
            info, slowlog_len = pipe.execute()
        except RedisError as exc:
            logger.warning("metrics: the %s role's Redis did not answer: %s", role, exc)
            up.add_metric([role], 0)
            down.add(role)
            continue
        up.add_metric([role], 1)
        for name, gauge in gauges.items():
            gauge.add_metric([role], float(info.get(name, 0)))
        for name, counter in counters.items():
            counter.add_metric([role], float(info.get(name, 0)))
        db = 0 if isinstance(client, RedisCluster) else client.connection_pool.connection_kwargs.get("db", 0)
        keys.add_metric([role], float((info.get(f"db{db}") or {}).get("keys", 0)))
        slowlog.add_metric([role], float(slowlog_len))
        policy.add_metric([role, str(info.get("maxmemory_policy", "unknown"))], 1)
    return [up, *gauges.values(), *counters.values(), keys, slowlog, policy], down


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
