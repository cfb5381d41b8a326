"""What /healthz reports: can this process reach each Redis role and the database?

The queue role is probed (redis_queue) only when it is not the state role's database.
A role on Redis Cluster is probed node by node (ops.nodes: a PING each): it is ok when
every primary answers, and its check lists each node under "nodes" (its part, the slots
a primary serves or a replica's primary, and its own ok and latency). A replica that
does not answer shows there without failing the role: reads and writes go to primaries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connections
from redis.cluster import RedisCluster

from core.redis import ClusterUnavailable, Role, get_redis, reported_roles
from ops.nodes import NotInSlotMap, RoleNode, role_nodes


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None
    nodes: dict[str, dict[str, object]] | None = None  # a cluster role's, by address

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"ok": self.ok, "latency_ms": round(self.latency_ms, 2)}
        if self.error:
            data["error"] = self.error
        if self.nodes is not None:
            data["nodes"] = self.nodes
        return data


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _timed(name: str, probe) -> Probe:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - any failure is what a health check reports
        return Probe(name, False, _elapsed_ms(started), f"{type(exc).__name__}: {exc}")
    return Probe(name, True, _elapsed_ms(started))


def _ping_database() -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")


def _ping_node(node: RoleNode) -> Callable[[], object]:
    def ping() -> object:
        if node.client is None:
            raise NotInSlotMap(f"not in this process's slot map (cluster health: {node.health})")
        return node.client.ping()

    return ping


def _probe_cluster(name: str, role: Role, client: RedisCluster, started: float) -> Probe:
    """A cluster role's probe: a PING to each node; ok when every primary answers."""
    nodes: dict[str, dict[str, object]] = {}
    failing = []
    primaries = 0
    for node in role_nodes(client):
        probe = _timed(node.address, _ping_node(node))
        where: dict[str, object] = {"role": node.kind}
        if node.primary:
            primaries += 1
            where["slots"] = node.slot_ranges
            if not probe.ok:
                failing.append(f"{node.address} ({probe.error})")
        else:
            where["replica_of"] = node.replica_of
        nodes[node.address] = where | probe.as_dict()
    if failing or not primaries:
        reason = f"primaries did not answer: {', '.join(failing)}" if failing else "no primary is known"
        error = ClusterUnavailable(f"the {role} role's cluster: {reason}")
        return Probe(name, False, _elapsed_ms(started), f"{type(error).__name__}: {error}", nodes)
    return Probe(name, True, _elapsed_ms(started), nodes=nodes)


def _probe_redis(role: Role) -> Probe:
    name = f"redis_{role}"
    started = time.perf_counter()
    try:
        client = get_redis(role)
        if not isinstance(client, RedisCluster):
            client.ping()
            return Probe(name, True, _elapsed_ms(started))
    except Exception as exc:  # noqa: BLE001 - any failure is what a health check reports
        return Probe(name, False, _elapsed_ms(started), f"{type(exc).__name__}: {exc}")
    return _probe_cluster(name, role, client, started)


def check_all() -> list[Probe]:
    return [*(_probe_redis(role) for role in reported_roles()), _timed("database", _ping_database)]
