"""Start and stop a private Redis Cluster: primaries, optional replicas, every slot assigned.

For the tests and benchmarks of Kestrel's roles on Redis Cluster, and for `make run`
with a cluster. Every node is a RedisServer (devstack.redis_server): the same binary,
loopback only, free ports, a child in a session of its own that dies with its parent.
Slots are assigned with CLUSTER commands, as `redis-cli --cluster create` would, so a
server binary is all it needs. Like redis_server, this module does not import Django.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from devstack.redis_server import RedisServer, RedisServerError, find_redis_server

TOTAL_SLOTS = 16384

Address = tuple[str, int]


class RedisClusterError(RedisServerError):
    pass


@dataclass(frozen=True)
class NodeView:
    """One line of CLUSTER NODES: how one node sees another (or itself)."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "noaddr", "handshake"})

    @property
    def serving_primary(self) -> bool:
        """A primary that holds slots and is not suspected of failing."""
        return "master" in self.flags and bool(self.slots) and not self.failing

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)


def parse_cluster_nodes(text: str) -> list[NodeView]:
    """CLUSTER NODES' lines (`id ip:port@bus flags primary ping pong epoch link slot...`) as NodeViews."""
    views = []
    for line in text.splitlines():
        if not line.strip():
            continue
        node_id, address, flags, primary, _ping, _pong, _epoch, _link, *slot_fields = line.split()
        port = int(address.split("@")[0].rpartition(":")[2])
        slots = []
        for field in slot_fields:
            if field.startswith("["):
                continue  # a slot being imported or migrated
            first, _, last = field.partition("-")
            slots.append((int(first), int(last or first)))
        views.append(
            NodeView(node_id, port, frozenset(flags.split(",")), None if primary == "-" else primary, tuple(slots))
        )
    return views


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: each socket stays bound until all are chosen."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


class LocalCluster:
    """A Redis Cluster of `primaries` primaries with `replicas_per_primary` replicas each, on 127.0.0.1.

    Nodes persist with an AOF (`appendonly yes`, no RDB snapshots), as the state role's
    servers do; `extra_config` goes to every node, e.g. {"maxmemory": "64mb",
    "maxmemory-policy": "allkeys-lru", "appendonly": "no"} for the cache role. Files go
    to a temporary folder removed by cleanup(), or to `data_dir`, which is kept: a new
    LocalCluster on the same `data_dir` starts the same nodes on the same ports with
    their slots and data. stop() and start() keep the ports too.

    A node that misses `node_timeout_ms` of pings is flagged failing, after which its
    replica is promoted: small here, so that failover tests are quick.
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 0,
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        node_timeout_ms: int = 1000,
        extra_config: dict[str, str] | None = None,
        startup_timeout: float = 20.0,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if primaries < 1 or replicas_per_primary < 0:
            raise ValueError("a cluster needs at least one primary and no negative number of replicas")
        self.host = host
        self.primary_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.binary = binary or find_redis_server()
        self.node_timeout_ms = node_timeout_ms
        # A replica's first sync starts at once, not after the default 5 s wait for others.
        self.extra_config = {"appendonly": "yes", "repl-diskless-sync-delay": "0", **(extra_config or {})}
        self.startup_timeout = startup_timeout
        self._keep_dir = data_dir is not None
        if data_dir is not None:
            os.makedirs(data_dir, exist_ok=True)
            self._dir = Path(data_dir)
        else:
            self._dir = Path(tempfile.mkdtemp(prefix="kestrel-redis-cluster-"))
        # Every node by client port; which are primaries now, primaries() asks the cluster.
        self.servers: dict[int, RedisServer] = {}
        self._clients: dict[int, redis.Redis] = {}
        self._bus_ports: dict[int, int] = {}
        self._killed: dict[int, tuple[NodeView, float]] = {}

    # --- Addresses ----------------------------------------------------------------

    @property
    def seed_nodes(self) -> list[Address]:
        """Every node's (host, port), by port: any of them can give a client the slot map."""
        return [(self.host, port) for port in sorted(self.servers)]

    @property
    def url(self) -> str:
        """`redis+cluster://host:port,host:port,...`, the form Kestrel's settings take."""
        return "redis+cluster://" + ",".join(f"{host}:{port}" for host, port in self.seed_nodes)

    def primaries(self) -> list[Address]:
        """The primaries serving slots now, as the cluster sees them (a promoted replica is one), by port."""
        return sorted((self.host, view.port) for view in self._view() if view.serving_primary)

    def replicas(self) -> list[Address]:
        """The replicas now attached to a primary and not failing, by port."""
        return sorted((self.host, view.port) for view in self._view() if "slave" in view.flags and not view.failing)

    def node_for_slot(self, slot: int) -> Address:
        """The primary serving `slot` now."""
        if not 0 <= slot < TOTAL_SLOTS:
            raise ValueError(f"slot {slot} is not in 0..{TOTAL_SLOTS - 1}")
        for view in self._view():
            if view.serving_primary and view.serves(slot):
                return (self.host, view.port)
        raise RedisClusterError(f"no primary serves slot {slot}")

    def slots_of(self, node: int | Address) -> frozenset[int]:
        """The slots `node` serves now, as the cluster sees it (none for a replica or a failing node)."""
        port = node if isinstance(node, int) else node[1]
        return frozenset(
            slot
            for view in self._view()
            if view.port == port and view.serving_primary
            for first, last in view.slots
            for slot in range(first, last + 1)
        )

    def pids(self) -> list[int]:
        """The process ids of the running nodes."""
        return [server.process.pid for server in self.servers.values() if server.process and server.is_running()]

    def client(self, port: int) -> redis.Redis:
        """A plain (non-cluster) client of one node, for CLUSTER commands and checks."""
        if port not in self._clients:
            self._clients[port] = redis.Redis(
                host=self.host, port=port, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
            )
        return self._clients[port]

    # --- Start and stop -----------------------------------------------------------

    def start(self) -> LocalCluster:
        """Start every node and return once the cluster is ok on each; forms it on first start."""
        try:
            formed = bool(self.servers)
            if not formed:
                kept = self._kept_nodes()
                formed = bool(kept)
                self._add_servers(kept or self._new_ports())
            for server in self.servers.values():
                server.start()
            if not formed:
                self._form()
            self._wait("every node to see all slots served", self._is_whole)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node this cluster started (SIGTERM, each by its PID, then wait)."""
        for server in self.servers.values():
            server.stop()
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def cleanup(self) -> None:
        self.stop()
        if not self._keep_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def _node_count(self) -> int:
        return self.primary_count * (1 + self.replicas_per_primary)

    def _new_ports(self) -> list[tuple[int, int]]:
        """(port, bus port) for each node, all distinct and free."""
        ports = free_ports(2 * self._node_count(), self.host)
        return list(zip(ports[::2], ports[1::2], strict=True))

    def _kept_nodes(self) -> list[tuple[int, int]]:
        """(port, bus port) of the nodes a previous run left in the data folder, from their nodes.conf."""
        found = []
        for conf in sorted(self._dir.glob("node-*/nodes.conf")):
            match = re.search(r"^\S+ \S*:(\d+)@(\d+)\S* myself,", conf.read_text(), re.MULTILINE)
            if match is None:
                raise RedisClusterError(f"{conf} does not name its own node: remove {self._dir} to start afresh")
            found.append((int(match[1]), int(match[2])))
        if found and len(found) != self._node_count():
            raise RedisClusterError(
                f"{self._dir} holds {len(found)} nodes, not {self._node_count()}: remove it to start afresh"
            )
        return found

    def _add_servers(self, ports: list[tuple[int, int]]) -> None:
        for port, bus_port in ports:
            node_dir = self._dir / f"node-{port}"
            self.servers[port] = RedisServer(
                port=port,
                host=self.host,
                binary=self.binary,
                data_dir=node_dir,
                startup_timeout=self.startup_timeout,
                extra_config={
                    **self.extra_config,
                    "cluster-enabled": "yes",
                    "cluster-config-file": str(node_dir / "nodes.conf"),
                    "cluster-node-timeout": str(self.node_timeout_ms),
                    # The bus port is chosen too: port + 10000 may be taken or past 65535.
                    "cluster-port": str(bus_port),
                },
            )
            self._bus_ports[port] = bus_port

    def _form(self) -> None:
        """Split the slots evenly over the primaries, join every node to the first, attach the replicas."""
        ports = list(self.servers)
        primaries, replicas = ports[: self.primary_count], ports[self.primary_count :]
        for epoch, port in enumerate(ports, start=1):
            # Distinct config epochs, as redis-cli gives them: no collisions to resolve.
            self.client(port).execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for index, port in enumerate(primaries):
            first, end = index * TOTAL_SLOTS // len(primaries), (index + 1) * TOTAL_SLOTS // len(primaries)
            self.client(port).execute_command("CLUSTER", "ADDSLOTS", *range(first, end))
        for port in ports[1:]:
            self.client(port).execute_command("CLUSTER", "MEET", self.host, ports[0], self._bus_ports[ports[0]])
        self._wait("every node to know the others", self._all_met)
        ids = {port: self.client(port).execute_command("CLUSTER", "MYID") for port in primaries}
        for index, port in enumerate(replicas):
            self.client(port).execute_command(
                "CLUSTER", "REPLICATE", ids[primaries[index // self.replicas_per_primary]]
            )

    # --- Waiting ------------------------------------------------------------------

    def _wait(self, what: str, condition: Callable[[], bool], timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        error: redis.RedisError | None = None
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except redis.RedisError as exc:
                error = exc  # a node still starting, or one just killed
            time.sleep(0.05)
        last = f"; last error: {error}" if error else ""
        raise RedisClusterError(f"timed out waiting for {what} (nodes {list(self.servers)}){last}")

    def _running(self) -> list[int]:
        return [port for port, server in self.servers.items() if server.is_running()]

    def _view(self, port: int | None = None) -> list[NodeView]:
        """CLUSTER NODES as one node sees it: `port`, or the first running node."""
        if port is None:
            running = self._running()
            if not running:
                raise RedisClusterError("no node of the cluster is running")
            port = running[0]
        return parse_cluster_nodes(self.client(port).execute_command("CLUSTER", "NODES"))

    def _all_met(self) -> bool:
        return all(
            len([view for view in self._view(port) if not view.failing]) == len(self.servers) for port in self.servers
        )

    def _is_ok(self, port: int) -> bool:
        info = dict(
            line.split(":", 1) for line in self.client(port).execute_command("CLUSTER", "INFO").split() if ":" in line
        )
        return info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == str(TOTAL_SLOTS)

    def _is_whole(self) -> bool:
        """Every node: state ok, every slot served, each primary with its replicas, each replica in sync."""
        for port in self.servers:
            views = self._view(port)
            primaries = {view.node_id for view in views if view.serving_primary}
            replicas = [view for view in views if not view.failing and view.primary_id in primaries]
            if not self._is_ok(port) or (len(primaries), len(replicas)) != (
                self.primary_count,
                self.primary_count * self.replicas_per_primary,
            ):
                return False
            myself = next(view for view in views if "myself" in view.flags)
            if "slave" in myself.flags and self.client(port).info("replication").get("master_link_status") != "up":
                return False
        return True

    # --- Faults -------------------------------------------------------------------

    def kill_primary(self, node: int | Address) -> None:
        """SIGKILL a primary, as a crash would; wait_for_failover() then times the promotion of its replica."""
        port = node if isinstance(node, int) else node[1]
        victim = next((view for view in self._view() if view.port == port and view.serving_primary), None)
        if victim is None:
            raise ValueError(f"{self.host}:{port} is not a primary of this cluster")
        self.servers[port].stop(kill=True)
        self._killed[port] = (victim, time.monotonic())

    def wait_for_failover(self, old_primary: int | Address, timeout: float = 30.0) -> float:
        """Wait until another node serves the killed primary's slots and every node is ok again.

        Returns the seconds from kill_primary() to then.
        """
        port = old_primary if isinstance(old_primary, int) else old_primary[1]
        if port not in self._killed:
            raise ValueError(f"{self.host}:{port} was not killed with kill_primary()")
        victim, killed_at = self._killed[port]
        slot = victim.slots[0][0]

        def promoted() -> bool:
            for running in self._running():
                owner = next((view for view in self._view(running) if view.serving_primary and view.serves(slot)), None)
                if owner is None or owner.node_id == victim.node_id or not self._is_ok(running):
                    return False
            return True

        self._wait(f"a replica of {self.host}:{port} to take its slots", promoted, timeout)
        return time.monotonic() - killed_at
