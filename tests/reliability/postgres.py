"""A private PostgreSQL cluster for the fault suites: initdb in a temporary folder, one
postmaster on a free port of 127.0.0.1, stopped and started again at will.

The binaries are the distribution's (/usr/lib/postgresql/<version>/bin, or $PG_BIN).
PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to
the `postgres` account: the folder is handed to it, and every command runs as it. The
machine's own PostgreSQL (its port, its socket folder, its data) is never touched: the
cluster listens on its own port, keeps its socket in its own folder, and is stopped by
the PID this module started.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from config.pdeathsig import die_with_parent
from devstack.processes import free_port

HOST = "127.0.0.1"
DATABASE = "kestrel"
USER = "kestrel"

# How pg_ctl's stop modes end the postmaster (its documentation, "Server Shutdown").
STOP_SIGNALS = {
    "smart": signal.SIGTERM,  # waits for every client to disconnect
    "fast": signal.SIGINT,  # rolls back open transactions, disconnects clients, checkpoints
    "immediate": signal.SIGQUIT,  # no checkpoint: crash recovery at the next start
}


class PostgresError(RuntimeError):
    pass


def find_pg_bin() -> Path | None:
    """The folder holding initdb and postgres: $PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    explicit = os.environ.get("PG_BIN")
    if explicit:
        return Path(explicit)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for folder in versions:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    return None


class PostgresServer:
    """One private cluster; `url` is its DATABASE_URL. stop(mode) / start() keep the data and the port."""

    def __init__(self, bin_dir: Path, *, startup_timeout: float = 30.0) -> None:
        self.bin_dir = bin_dir
        self.port = free_port(HOST)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._root = Path(tempfile.mkdtemp(prefix="kestrel-pg-"))
        self.data_dir = self._root / "data"
        self.socket_dir = self._root / "run"
        self.log_path = self._root / "postgres.log"
        # Root may not run PostgreSQL: hand the folder to the postgres account.
        self._user = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgres://{USER}@{HOST}:{self.port}/{DATABASE}"

    def _run_as(self) -> dict:
        return {"user": self._user} if self._user else {}

    def init(self) -> PostgresServer:
        self.socket_dir.mkdir()
        if self._user:
            account = pwd.getpwnam(self._user)
            for path in (self._root, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
        result = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                USER,
                # Loopback only, on a throwaway cluster: no passwords.
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **self._run_as(),
        )
        if result.returncode != 0:
            raise PostgresError(f"initdb failed:\n{result.stdout}{result.stderr}")
        return self

    def start(self) -> PostgresServer:
        if self.is_running():
            return self
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-h",
                    HOST,
                    "-k",
                    str(self.socket_dir),
                    # A test cluster: durability is not what is measured, start-up time is.
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=100",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # Runs after the switch to the postgres account, so the kernel still
                # ends the postmaster with this process.
                preexec_fn=die_with_parent,
                **self._run_as(),
            )
        finally:
            log.close()
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresError(f"postgres exited at start:\n{self.log_tail()}")
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", HOST, "-p", str(self.port), "-U", USER, "-d", "postgres"],
                capture_output=True,
                timeout=10,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(f"postgres did not accept connections on port {self.port}:\n{self.log_tail()}")

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(host=HOST, port=self.port, user=USER, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """Stop the postmaster as `pg_ctl stop -m <mode>` would, by the PID this object started."""
        if not self.is_running():
            return
        self.process.send_signal(STOP_SIGNALS[mode])
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGQUIT)
            self.process.wait(timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.stop("immediate")
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.init().start()

    def __exit__(self, *exc_info) -> None:
        self.cleanup()
