"""The nodes of a role on Redis Cluster, for /ops, /metrics, /healthz and redis_audit.

A cluster role's client (core.cluster) sends a keyless command (INFO, SLOWLOG, PING) to
one node, and its pipelines refuse them, so figures of the whole role ask each node in
turn. role_nodes() reads who serves what from the cluster itself (CLUSTER SHARDS, asked
of the first node that answers): every primary with its slots, every replica with its
primary. Each node comes with a single-server client on the pool the role's client keeps
for that node (the role's timeouts, circuit breaker and client name; its commands
counted under the role, core.instrumentation.redis_client), so that ask_each() reads a
node's figures in one pipeline, one round trip a node. RedisCluster.info(target_nodes=)
would cost a round trip per command and fail whole when one node does not answer.

A node the cluster lists but this process's slot map does not (a replica still loading,
a primary without slots) comes without a client: it is shown, not asked. When no node
answers CLUSTER SHARDS, the nodes are the client's own slot map.

Role totals read as one server's INFO would (summed_info): the sum over the primaries,
which hold the keys; a replica's memory and counters are its copy of its primary's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisError, ResponseError

from core.instrumentation import redis_client

TOTAL_SLOTS = 16384


class NotInSlotMap(RedisError):
    """A node the cluster lists that this process's client has no connection pool for."""


@dataclass(frozen=True)
class RoleNode:
    """One node of a cluster role: its address (host:port, as the cluster announces it) and part."""

    address: str
    primary: bool
    slots: tuple[tuple[int, int], ...] = ()  # the ranges a primary serves; none for a replica
    replica_of: str = ""  # a replica's primary
    health: str = ""  # the cluster's view (CLUSTER SHARDS): online, loading or fail; "" from the slot map
    client: Redis | None = field(default=None, compare=False, repr=False)

    @property
    def kind(self) -> str:
        return "primary" if self.primary else "replica"

    @property
    def slot_count(self) -> int:
        return sum(last - first + 1 for first, last in self.slots)

    @property
    def slot_ranges(self) -> str:
        """ "0-5460 10923", as CLUSTER NODES writes them; "" for none."""
        return " ".join(f"{first}-{last}" if last != first else str(first) for first, last in self.slots)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _node_client(client: RedisCluster, node: ClusterNode) -> Redis:
    """A single-server client on the pool `client` keeps for `node`."""
    return redis_client(connection_pool=client.get_redis_connection(node).connection_pool)


def _ranges(bounds: list[Any]) -> tuple[tuple[int, int], ...]:
    """CLUSTER SHARDS' flat [first, last, first, last, ...] as (first, last) pairs."""
    return tuple(sorted((int(bounds[i]), int(bounds[i + 1])) for i in range(0, len(bounds) - 1, 2)))


def _shards(client: RedisCluster) -> list[dict[str, Any]] | None:
    """CLUSTER SHARDS from the first of the client's nodes that answers (primaries first); None if none does."""
    for node in [*client.get_primaries(), *client.get_replicas()]:
        try:
            reply = _node_client(client, node).execute_command("CLUSTER SHARDS")
        except ResponseError:
            return None  # a server without CLUSTER SHARDS (before Redis 7) answers so on every node
        except RedisError:
            continue
        return [{_text(name): value for name, value in shard.items()} for shard in reply]
    return None


def _from_shards(client: RedisCluster, shards: list[dict[str, Any]]) -> list[RoleNode]:
    known = {node.name: node for node in client.get_nodes()}
    nodes = []
    # Shards by their first slot (those serving none last); in each, the primary first.
    for shard in sorted(shards, key=lambda shard: min(_ranges(shard["slots"]), default=(TOTAL_SLOTS, 0))):
        slots = _ranges(shard["slots"])
        members = [{_text(name): value for name, value in member.items()} for member in shard["nodes"]]
        members.sort(key=lambda member: (_text(member["role"]) != "master", int(member.get("port") or 0)))
        primary = ""
        for member in members:
            host = _text(member.get("endpoint") or member.get("ip"))
            # A TLS client knows a node by its tls-port, which CLUSTER SHARDS gives apart.
            named = [f"{host}:{member[port]}" for port in ("port", "tls-port") if member.get(port)]
            address = next((name for name in named if name in known), named[0])
            is_primary = _text(member["role"]) == "master"
            if is_primary:
                primary = address
            known_node = known.get(address)
            nodes.append(
                RoleNode(
                    address=address,
                    primary=is_primary,
                    slots=slots if is_primary else (),
                    replica_of="" if is_primary else primary,
                    health=_text(member.get("health", "")),
                    client=_node_client(client, known_node) if known_node is not None else None,
                )
            )
    return nodes


def _from_slot_map(client: RedisCluster) -> list[RoleNode]:
    """The nodes and slots the client itself knows (its slot map), when the cluster could not be asked."""
    served: dict[str, list[int]] = {}
    primary_of: dict[str, str] = {}
    for slot, holders in client.nodes_manager.slots_cache.items():
        if holders:
            served.setdefault(holders[0].name, []).append(slot)
            primary_of |= {replica.name: holders[0].name for replica in holders[1:]}
    nodes = []
    for node in sorted(client.get_nodes(), key=lambda node: (node.server_type != "primary", node.name)):
        slots: list[tuple[int, int]] = []
        for slot in sorted(served.get(node.name, ())):
            if slots and slots[-1][1] == slot - 1:
                slots[-1] = (slots[-1][0], slot)
            else:
                slots.append((slot, slot))
        primary = node.server_type == "primary"
        nodes.append(
            RoleNode(
                address=node.name,
                primary=primary,
                slots=tuple(slots) if primary else (),
                replica_of="" if primary else primary_of.get(node.name, ""),
                client=_node_client(client, node),
            )
        )
    return nodes


def role_nodes(client: RedisCluster) -> list[RoleNode]:
    """Every node of a cluster role, primaries in slot order each followed by its replicas; never raises.

    One round trip (CLUSTER SHARDS), more only while nodes do not answer.
    """
    shards = _shards(client)
    return _from_shards(client, shards) if shards is not None else _from_slot_map(client)


def ask_each(
    nodes: Iterable[RoleNode], commands: Callable[[Pipeline], object]
) -> list[tuple[RoleNode, list[Any] | Exception]]:
    """Each node's replies to the commands `commands` queues on a pipeline (one round trip a
    node; an error reply to a later command in its place), or what kept the node from
    answering: a connection error, or its error reply to the first command."""
    answers: list[tuple[RoleNode, list[Any] | Exception]] = []
    for node in nodes:
        if node.client is None:
            answers.append((node, NotInSlotMap(f"not in this process's slot map (cluster health: {node.health})")))
            continue
        pipe = node.client.pipeline(transaction=False)
        commands(pipe)
        try:
            replies = pipe.execute(raise_on_error=False)
        except RedisError as exc:
            answers.append((node, exc))
            continue
        answers.append((node, replies[0] if isinstance(replies[0], Exception) else replies))
    return answers


# INFO fields that add up over the primaries (memory, clients, counters, the current rate).
SUMMED_INFO = (
    "used_memory",
    "used_memory_rss",
    "maxmemory",
    "connected_clients",
    "evicted_keys",
    "expired_keys",
    "keyspace_hits",
    "keyspace_misses",
    "total_commands_processed",
    "instantaneous_ops_per_sec",
)


def summed_info(infos: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The primaries' INFO as one server's would read: SUMMED_INFO and db0's keys summed,
    maxmemory_policy the primaries' own (their distinct policies joined when they differ),
    used_memory_human and maxmemory_human written as Redis writes them."""
    infos = list(infos)
    total: dict[str, Any] = {name: sum(int(info.get(name, 0) or 0) for info in infos) for name in SUMMED_INFO}
    total["db0"] = {"keys": sum(int((info.get("db0") or {}).get("keys", 0)) for info in infos)}
    total["maxmemory_policy"] = ", ".join(sorted({str(info.get("maxmemory_policy", "unknown")) for info in infos}))
    total["used_memory_human"] = human_bytes(total["used_memory"])
    total["maxmemory_human"] = human_bytes(total["maxmemory"])
    if total["used_memory"]:
        total["mem_fragmentation_ratio"] = round(total["used_memory_rss"] / total["used_memory"], 2)
    return total


def human_bytes(size: int) -> str:
    """A size as INFO's *_human fields write it: "512B", "1.50K", "12.34M"."""
    value, unit = float(size), "B"
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            break
        value /= 1024
    return f"{size}B" if unit == "B" else f"{value:.2f}{unit}"
