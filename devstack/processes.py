"""Child processes of a private Kestrel stack: environment, manage.py, long-running children.

`make run` (devstack.run), the benchmarks (bench.harness, bench.load) and the live test
stack (tests/live.py) start Kestrel's processes with these. Each child runs in a session
of its own, so a Ctrl-C reaches only the launcher, which then stops the children in
order; and each is told by the kernel to exit with its parent, even on SIGKILL, so no
server is left behind. Standard library only, no Django: it runs before settings exist
(die_with_parent comes from config.pdeathsig, which gunicorn's workers use too).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from config.pdeathsig import die_with_parent

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
# The periodic jobs' file for `manage.py rqcron` (RQ's cron scheduler).
CRON_FILE = "jobs/cron.py"


class StackError(RuntimeError):
    """A child of the stack failed to start or to finish; the message shows its output."""


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def random_secret(length: int = 50) -> str:
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    return "".join(secrets.choice(alphabet) for _ in range(length))


# --- Environment --------------------------------------------------------------------


def stack_env(
    *,
    settings_module: str,
    var_dir: Path,
    redis_url: str,
    cache_url: str | None = None,
    database_url: str | None = None,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a private stack's children: production settings on loopback, state in `var_dir`.

    DEBUG off (it keeps every SQL query in memory and is not what production runs),
    plain HTTP, a fresh SECRET_KEY. Without `cache_url` the cache role takes the next
    database of `redis_url` (config.settings); without `database_url`, SQLite in
    `var_dir`. `overrides` come last.
    """
    env = dict(os.environ)
    # Only what the stack started: a database, Redis or metrics folder named in the
    # caller's shell would point the children at someone's real services.
    for name in ("DATABASE_URL", "REDIS_URL", "REDIS_CACHE_URL", "REDIS_KEY_PREFIX", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": settings_module,
            "DEBUG": "0",
            "SECRET_KEY": random_secret(),
            # Plain HTTP on loopback: no redirect to https, cookies sent without TLS.
            "SECURE_SSL_REDIRECT": "0",
            "SESSION_COOKIE_SECURE": "0",
            "CSRF_COOKIE_SECURE": "0",
            "ALLOWED_HOSTS": f"{HOST},localhost",
            "KESTREL_VAR_DIR": str(var_dir),
            "REDIS_URL": redis_url,
            # INFO would log on every request under load, and fill the children's logs.
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if cache_url:
        env["REDIS_CACHE_URL"] = cache_url
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(overrides or {})
    return env


# --- manage.py ----------------------------------------------------------------------


def manage_command(*args: str) -> list[str]:
    """`manage.py <args>` run by this interpreter, as an argument list."""
    return [sys.executable, "manage.py", *args]


def run_manage(env: Mapping[str, str], *args: str, timeout: float | None = 300, capture: bool = True) -> str:
    """Run `manage.py <args>` to the end; its stdout, or StackError with its output when it fails.

    `capture=False` leaves the output on this process's terminal (`make run` shows
    seed_demo's logins) and returns "".
    """
    result = subprocess.run(  # this interpreter and subcommands named in code, no shell  # nosec B603
        manage_command(*args),
        cwd=PROJECT_ROOT,
        env=dict(env),
        capture_output=capture,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=die_with_parent,
    )
    if result.returncode != 0:
        output = f":\n{result.stdout}{result.stderr}" if capture else ""
        raise StackError(f"`manage.py {' '.join(args)}` exited with {result.returncode}{output}")
    return result.stdout or ""


def rq_worker_command(*, pool: int | None = None, extra_args: Sequence[str] = ()) -> list[str]:
    """The RQ worker on every queue, first to last as jobs.queues orders them.

    `pool=None`: one `rqworker` with RQ's scheduler and Kestrel's worker TTL, as the
    systemd unit runs it. `pool=N`: `rqworker-pool` of N workers, which replaces a
    worker a crashing job ended; each takes its scheduler and intervals from its class.
    """
    from jobs.queues import WORKER_QUEUES, WORKER_TTL  # Django-free; imported only by launchers that need it

    if pool is not None:
        return manage_command("rqworker-pool", *WORKER_QUEUES, "--num-workers", str(pool), *extra_args)
    return manage_command("rqworker", *WORKER_QUEUES, "--with-scheduler", "--worker-ttl", str(WORKER_TTL), *extra_args)


def rq_cron_command() -> list[str]:
    """RQ's cron scheduler, which enqueues the periodic jobs of CRON_FILE."""
    return manage_command("rqcron", CRON_FILE)


# --- Long-running children ----------------------------------------------------------


def session_members(session: int) -> list[int]:
    """Live (not zombie) processes of a session, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # pid (comm) state ppid pgrp session ...; comm may hold spaces, so split after ")".
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == session and fields[0] != "Z":
            members.append(int(entry))
    return members


class Process:
    """One long-running child (gunicorn, `manage.py rqworker`, `rqcron`) that can be stopped, killed and started again.

    Its output goes to `log_path` (appended), or to this process's terminal without one.
    """

    def __init__(self, name: str, args: list[str], *, env: Mapping[str, str], log_path: Path | None = None) -> None:
        self.name = name
        self.args = args
        self.env = dict(env)
        self.log_path = log_path
        self.popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise StackError(f"the {self.name} is not started")
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> Process:
        with contextlib.ExitStack() as files:
            log = files.enter_context(self.log_path.open("ab")) if self.log_path is not None else None
            self.popen = subprocess.Popen(  # argument lists built in code, never a shell string  # nosec B603
                self.args,
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
                # A session of its own: a Ctrl-C meant for the launcher must not stop the
                # children all at once, before the launcher stops them in order.
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of the child's session; SIGKILL waits for the child.

        The session, not the process group: an RQ worker's work horse puts itself in a
        process group of its own (os.setpgrp), and would otherwise live on and finish
        the job its worker was killed in.
        """
        if not self.is_running():
            return
        session = self.popen.pid  # start_new_session: the child leads its own session
        for _ in range(50):  # a fork in flight can add a member after a pass
            members = session_members(session)
            if not members:
                break
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if sig != signal.SIGKILL:
                break
            time.sleep(0.01)
        if sig == signal.SIGKILL:
            self.popen.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a warm shutdown: the current request or job finishes), then SIGKILL after `timeout`."""
        stop_all([self], timeout=timeout)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return "(output on the terminal)"
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop_all(processes: Sequence[Process], *, timeout: float = 15.0) -> None:
    """SIGTERM every running child at once, then SIGKILL the sessions of those still running after `timeout`."""
    running = [process for process in processes if process.is_running()]
    for process in running:
        process.popen.terminate()
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
