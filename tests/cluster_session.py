"""The private servers of a cluster test session (`make test-cluster`, KESTREL_TEST_CLUSTER=1)."""

from __future__ import annotations

from devstack.redis_cluster import LocalCluster
from devstack.redis_server import RedisServer


class ClusterSession:
    """The servers of a cluster session, which the fault fixtures stop and pause as one.

    Like the single private server, none persists (a restart comes back empty), and a
    node timeout longer than any test's pause keeps the nodes from flagging each other
    failing while they are frozen together.
    """

    def __init__(self) -> None:
        node_timeout_ms = 60_000
        self.state = LocalCluster(
            primaries=3,
            node_timeout_ms=node_timeout_ms,
            extra_config={"maxmemory-policy": "noeviction", "appendonly": "no"},
        )
        self.cache = LocalCluster(
            primaries=3,
            node_timeout_ms=node_timeout_ms,
            extra_config={"maxmemory": "64mb", "maxmemory-policy": "allkeys-lru", "appendonly": "no"},
        )
        self.queue = RedisServer(extra_config={"maxmemory-policy": "noeviction"})

    def _servers(self) -> list[RedisServer]:
        return [self.queue, *self.state.servers.values(), *self.cache.servers.values()]

    def start(self) -> ClusterSession:
        """Start every server; return once both clusters serve every slot."""
        self.queue.start()
        self.state.start()
        self.cache.start()
        return self

    def stop(self) -> None:
        self.queue.stop()
        self.state.stop()
        self.cache.stop()

    def is_running(self) -> bool:
        return all(server.is_running() for server in self._servers())

    def pause(self) -> None:
        """SIGSTOP every node and the queue server: connections hang, data stays."""
        for server in self._servers():
            server.pause()

    def resume(self) -> None:
        for server in self._servers():
            server.resume()
        self.start()  # returns once both clusters are whole again

    def cleanup(self) -> None:
        self.queue.cleanup()
        self.state.cleanup()
        self.cache.cleanup()
