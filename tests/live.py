"""A live Kestrel for the browser and reliability suites: every process real, on 127.0.0.1.

    with live_kestrel() as site:
        site.url("/")                      # gunicorn (config/gunicorn.py, gthread)
        site.state.stop(kill=True)         # the state role's redis-server (noeviction)
        site.cache.pause()                 # the cache role's own server (allkeys-lru)
        site.worker.kill()                 # `manage.py rqworker ...` as production starts it

Two Redis servers, as production runs them (eviction is per server, so the cache role
gets its own), a database (SQLite in the stack's own folder unless `database_url` is
given), migrations, collected static files, the web server, an RQ worker and, when
asked, RQ's cron scheduler. Each child runs in a session of its own and is told by the
kernel to exit with this process, so a test that dies leaves nothing behind. Mail goes
to files in `site.mail_dir`, so the tests can read what the worker sent.

The settings are the production ones (DEBUG off, manifest static files, rate limiting
on) except for plain HTTP on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import Gunicorn, http_request, random_secret, run_manage
from core.redis_server import RedisServer, die_with_parent

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


class Process:
    """One long-running child (`manage.py rqworker`, `rqcron`) that a test can kill and start again."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"the {self.name} is not started"
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> Process:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.args,
                cwd=PROJECT_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
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
        """SIGTERM (RQ's warm shutdown: the current job finishes), then SIGKILL after `timeout`."""
        if not self.is_running():
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


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


@dataclass
class LiveKestrel:
    env: dict[str, str]
    var_dir: Path
    state: RedisServer
    cache: RedisServer
    web: Gunicorn
    worker: Process
    cron: Process | None = None
    mail_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.mail_dir = self.var_dir / "mail"

    @property
    def port(self) -> int:
        return self.web.port

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.web.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> tuple[int, object, bytes]:
        return http_request(self.web.port, method, path, headers=headers, body=body)

    def manage(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 300) -> str:
        return run_manage({**self.env, **(env or {})}, *args, timeout=timeout)

    def shell(self, code: str, *, env: Mapping[str, str] | None = None) -> str:
        """Run Python in `manage.py shell` against the live database and Redis; its stdout."""
        return self.manage("shell", "-c", code, env=env)

    def create_user(self, *, email: str, username: str, password: str, is_staff: bool = False) -> int:
        """A user made through Kestrel's own service (real password hashing); the new id."""
        code = (
            "import os\n"
            "from accounts.services import user_create\n"
            "user = user_create(email=os.environ['LIVE_EMAIL'], username=os.environ['LIVE_USERNAME'],"
            " password=os.environ['LIVE_PASSWORD'])\n"
            "if os.environ['LIVE_STAFF'] == '1':\n"
            "    user.is_staff = True\n"
            "    user.save(update_fields=['is_staff'])\n"
            "print(user.pk)\n"
        )
        output = self.shell(
            code,
            env={
                "LIVE_EMAIL": email,
                "LIVE_USERNAME": username,
                "LIVE_PASSWORD": password,
                "LIVE_STAFF": "1" if is_staff else "0",
            },
        )
        return int(output.strip().splitlines()[-1])

    def sent_mail(self) -> list[str]:
        """Every message the web server and the worker have sent, as raw text, oldest first."""
        if not self.mail_dir.exists():
            return []
        return [path.read_text(errors="replace") for path in sorted(self.mail_dir.iterdir(), key=os.path.getmtime)]

    def wait_until_healthy(self, timeout: float = 30.0) -> dict:
        """`/healthz` answering 200 again (after a fault); its body."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                status, _, content = self.request("GET", "/healthz")
            except OSError as exc:
                last = str(exc)
            else:
                if status == 200:
                    return json.loads(content)
                last = f"{status} {content[:300]!r}"
            time.sleep(0.1)
        raise AssertionError(f"/healthz did not answer 200 within {timeout:.0f} s ({last})")

    def logs(self) -> str:
        """The tails of every child's log, for an assertion message."""
        parts = [f"--- web\n{self.web.log_tail()}", f"--- worker\n{self.worker.log_tail()}"]
        if self.cron is not None:
            parts.append(f"--- cron\n{self.cron.log_tail()}")
        return "\n".join(parts)


def live_env(
    *, var_dir: Path, state_url: str, cache_url: str, database_url: str | None, overrides: Mapping[str, str]
) -> dict[str, str]:
    env = dict(os.environ)
    # Only what this stack started: never a DATABASE_URL or Redis from the caller's shell.
    for name in ("DATABASE_URL", "REDIS_URL", "REDIS_CACHE_URL", "REDIS_KEY_PREFIX", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "0",
            "SECRET_KEY": random_secret(),
            "JWT_SIGNING_KEY": random_secret(),
            # Plain HTTP on loopback: no redirect to https, cookies sent without TLS.
            "SECURE_SSL_REDIRECT": "0",
            "SESSION_COOKIE_SECURE": "0",
            "CSRF_COOKIE_SECURE": "0",
            "ALLOWED_HOSTS": f"{HOST},localhost",
            "KESTREL_VAR_DIR": str(var_dir),
            "REDIS_URL": state_url,
            "REDIS_CACHE_URL": cache_url,
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            "METRICS_TOKEN": secrets.token_urlsafe(16),
        }
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(overrides)
    return env


@contextlib.contextmanager
def live_kestrel(
    *,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    state_config: Mapping[str, str] | None = None,
    cache_config: Mapping[str, str] | None = None,
    web_workers: int = 2,
    web_threads: int = 16,
    cron: bool = False,
    worker_args: tuple[str, ...] = (),
    shared_redis: bool = False,
) -> Iterator[LiveKestrel]:
    """Start the whole stack; stop all of it on the way out, whatever happened.

    `state_config` / `cache_config` add redis.conf directives to the two servers (the
    state server gets `noeviction` and the cache server `allkeys-lru` first); `env`
    overrides settings; `worker_args` are added to the rqworker command line.

    `shared_redis=True` runs both roles on one server (state DB 0, cache DB 1, with
    `state_config`), the development layout that production must not use: only to show
    what it loses. `site.cache` is then the state server.
    """
    from jobs.queues import WORKER_QUEUES, WORKER_TTL

    var_dir = Path(tempfile.mkdtemp(prefix="kestrel-live-"))
    state = RedisServer(extra_config={"maxmemory-policy": "noeviction", **(state_config or {})})
    cache = (
        state if shared_redis else RedisServer(extra_config={"maxmemory-policy": "allkeys-lru", **(cache_config or {})})
    )
    started: list = []
    try:
        state.start()
        started.append(state)
        if not shared_redis:
            cache.start()
            started.append(cache)
        child_env = live_env(
            var_dir=var_dir,
            state_url=f"{state.url}/0",
            cache_url=f"{cache.url}/1" if shared_redis else f"{cache.url}/0",
            database_url=database_url,
            overrides=env or {},
        )
        (var_dir / "mail").mkdir()
        run_manage(child_env, "migrate", "--noinput", "-v", "0")
        run_manage(child_env, "collectstatic", "--noinput", "-v", "0")
        web = Gunicorn(
            env=child_env,
            log_path=var_dir / "web.log",
            worker_class="gthread",
            workers=web_workers,
            threads=web_threads,
            config=PROJECT_ROOT / "config" / "gunicorn.py",
        )
        worker = Process(
            "worker",
            [
                sys.executable,
                "manage.py",
                "rqworker",
                *WORKER_QUEUES,
                "--with-scheduler",
                "--worker-ttl",
                str(WORKER_TTL),
                *worker_args,
            ],
            env=child_env,
            log_path=var_dir / "worker.log",
        )
        cron_args = [sys.executable, "manage.py", "rqcron", "jobs/cron.py"]
        scheduler = Process("cron", cron_args, env=child_env, log_path=var_dir / "cron.log")
        site = LiveKestrel(env=child_env, var_dir=var_dir, state=state, cache=cache, web=web, worker=worker)
        web.start()
        started.append(web)
        worker.start()
        started.append(worker)
        if cron:
            scheduler.start()
            started.append(scheduler)
            site.cron = scheduler
        yield site
    finally:
        for child in reversed(started):
            if isinstance(child, RedisServer):
                with contextlib.suppress(ProcessLookupError, OSError):
                    child.resume()  # a SIGSTOPped server would not hear SIGTERM
                child.cleanup()
            else:
                child.stop()
        shutil.rmtree(var_dir, ignore_errors=True)
