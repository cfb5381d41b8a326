"""`make run` (`python -m devstack.run`): everything Kestrel needs on one machine.

A private Redis server when REDIS_URL is unset (`noeviction`), or for the queues alone
when REDIS_URL is a Redis Cluster's and REDIS_QUEUE_URL is unset; `migrate` and the demo
data, gunicorn on $PORT (8000, reloading while DEBUG), a pool of RQ workers
(WORKER_PROCESSES) with the scheduler, and RQ's cron scheduler. Ctrl-C or SIGTERM stops
all of it; every child also exits with this process, even on SIGKILL.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path

from core.redis import is_cluster_url
from devstack.processes import (
    PROJECT_ROOT,
    Process,
    StackError,
    rq_cron_command,
    rq_worker_command,
    run_manage,
    stop_all,
)
from devstack.redis_server import RedisServer, RedisServerError
from devstack.web import GUNICORN_CONFIG, Gunicorn

# The private servers of the state and queue roles: never evicting, and kept under var/
# (AOF, as those roles run in production), so a restart keeps sessions, notifications
# and queued jobs as SQLite keeps users and posts.
DURABLE_REDIS = {"maxmemory-policy": "noeviction", "appendonly": "yes", "appendfsync": "everysec"}


def _log(message: str) -> None:
    print(f"[kestrel] {message}", flush=True)


ENV_FILE = "devstack.env"
# Passed on to `make manage`: enough for manage.py to reach the running stack.
ENV_FILE_NAMES = (
    *("DEBUG", "REDIS_URL", "REDIS_CACHE_URL", "REDIS_QUEUE_URL", "REDIS_QUEUE_SENTINELS"),
    *("DATABASE_URL", "KESTREL_VAR_DIR", "REDIS_KEY_PREFIX"),
)


def _write_env_file(var_dir: Path, env: dict[str, str]) -> None:
    """var/devstack.env: the running stack's settings, as shell assignments `make manage` sources."""
    var_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"{name}={shlex.quote(env[name])}\n" for name in ENV_FILE_NAMES if env.get(name)]
    (var_dir / ENV_FILE).write_text("# Written by `make run` while it runs; removed when it stops.\n" + "".join(lines))


def _banner(*, port: str, logins: str, log_dir: Path | None, var_dir: Path) -> str:
    """What to open and how to log in, printed last so it is easy to find again."""
    site = f"http://127.0.0.1:{port}"
    logs = (
        f"{log_dir}/web.log, worker.log, cron.log (LOG_TO_CONSOLE=1 shows them here)" if log_dir else "on this terminal"
    )
    lines = [
        "",
        "=" * 72,
        f"  Kestrel is running: {site}/",
        "",
        f"  API docs     {site}/api/docs",
        f"  Admin        {site}/admin/   (jobs: {site}/admin/rq/)",
        f"  Ops          {site}/ops      (Redis at work; development mail: {site}/ops/mail)",
        "",
        *(f"  {line}" for line in logins.strip().splitlines()),
        "",
        f"  Logs         {logs}",
        f"  Mail         {var_dir / 'mail'}",
        "  manage.py    make manage ARGS=...   (in another terminal)",
        "  Ctrl-C stops everything.",
        "=" * 72,
    ]
    return "\n".join(lines)


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DEBUG", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    port = env.get("PORT", "8000")
    var_dir = Path(env.get("KESTREL_VAR_DIR") or PROJECT_ROOT / "var")
    redis_server: RedisServer | None = None
    queue_server: RedisServer | None = None
    children: list[Process] = []

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # Also when started in the background by a shell that set SIGINT to "ignore".
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if not env.get("REDIS_URL"):
            redis_port = int(env["REDIS_PORT"]) if env.get("REDIS_PORT") else None
            redis_server = RedisServer(port=redis_port, data_dir=var_dir / "redis", extra_config=DURABLE_REDIS).start()
            env["REDIS_URL"] = f"{redis_server.url}/0"
            _log(f"Redis ({Path(redis_server.binary).name}) on {redis_server.url}, pid {redis_server.process.pid}")
        else:
            _log("Using REDIS_URL from the environment")
            if is_cluster_url(env["REDIS_URL"]) and not env.get("REDIS_QUEUE_URL"):
                # RQ cannot run on a cluster: the queues get a private server of their own.
                queue_server = RedisServer(data_dir=var_dir / "redis-queue", extra_config=DURABLE_REDIS).start()
                env["REDIS_QUEUE_URL"] = f"{queue_server.url}/0"
                _log(f"REDIS_URL is a Redis Cluster: queues on a private Redis on {queue_server.url}")

        # What `make manage` needs to reach this stack from a second terminal.
        _write_env_file(var_dir, env)

        run_manage(env, "migrate", "--noinput", "-v", "0", timeout=None, capture=False)
        logins = run_manage(env, "seed_demo", timeout=None)  # shown in the banner, last

        # The children's output (access log, RQ's lines, metrics summaries) goes to files,
        # so the banner stays the last thing on the terminal; LOG_TO_CONSOLE=1 shows it here.
        to_console = env.get("LOG_TO_CONSOLE", "").lower() in {"1", "true", "yes", "on"}
        log_dir = var_dir / "log"
        log_dir.mkdir(parents=True, exist_ok=True)

        def log_file(name: str) -> Path | None:
            return None if to_console else log_dir / f"{name}.log"

        # Bind and graceful timeout through the environment, which config/gunicorn.py
        # reads, so values set in the caller's shell win.
        env.setdefault("GUNICORN_BIND", f"127.0.0.1:{port}")
        env.setdefault("GUNICORN_GRACEFUL_TIMEOUT", "5")
        web = Gunicorn(
            env=env,
            log_path=log_file("web"),
            config=GUNICORN_CONFIG,
            bind=env["GUNICORN_BIND"],
            graceful_timeout=None,
            reload=env["DEBUG"].lower() in {"1", "true", "yes", "on"},
        )
        # The pool replaces a worker that a crashing job ended (jobs.workers); each of its
        # workers runs RQ's scheduler and takes Kestrel's intervals from its class.
        processes = int(env.get("WORKER_PROCESSES") or os.cpu_count() or 2)
        worker = Process("worker", rq_worker_command(pool=processes), env=env, log_path=log_file("worker"))
        cron = Process("cron scheduler", rq_cron_command(), env=env, log_path=log_file("cron"))
        children = [web, worker, cron]
        web.start(timeout=None)  # not waiting for /healthz: the page says what is down
        worker.start()
        cron.start()
        print(_banner(port=port, logins=logins, log_dir=None if to_console else log_dir, var_dir=var_dir), flush=True)

        while all(child.is_running() for child in children):
            time.sleep(0.5)
        failed = next(child for child in children if not child.is_running())
        _log(f"The {failed.name} exited with status {failed.popen.returncode}; stopping everything")
        return 1
    except KeyboardInterrupt:
        _log("Stopping")
        return 0
    except (RedisServerError, StackError) as exc:
        _log(f"Could not start: {exc}")
        return 1
    finally:
        # A second signal must not cut the stop short and leave Redis to go before its
        # clients: `make` passes its own SIGTERM or Ctrl-C on to this process too.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all(children)
        for server in (redis_server, queue_server):
            if server is not None:
                server.cleanup()
        (var_dir / ENV_FILE).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
