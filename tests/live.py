"""A live Kestrel for the browser and reliability suites: every process real, on 127.0.0.1.

    with live_kestrel() as site:
        site.url("/")                      # gunicorn (config/gunicorn.py, gthread)
        site.state.stop(kill=True)         # the state role's redis-server (noeviction)
        site.cache.pause()                 # the cache role's own server (allkeys-lru)
        site.worker.kill()                 # `manage.py rqworker ...` as production starts it

Two Redis servers, as production runs them (eviction is per server, so the cache role
gets its own), a database (SQLite in the stack's own folder unless `database_url` is
given), migrations, collected static files, the web server, an RQ worker and, when
asked, RQ's cron scheduler, started with devstack's pieces as `make run` and the
benchmarks start theirs. Each child runs in a session of its own and is told by the
kernel to exit with this process, so a test that dies leaves nothing behind. Mail goes
to files in `site.mail_dir`, so the tests can read what the worker sent.

The settings are the production ones (DEBUG off, manifest static files, rate limiting
on) except for plain HTTP on loopback.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devstack.processes import HOST, Process, random_secret, rq_cron_command, rq_worker_command, run_manage, stack_env
from devstack.redis_server import RedisServer
from devstack.web import GUNICORN_CONFIG, Gunicorn, http_request, wait_until_healthy


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
        return wait_until_healthy(self.web.port, timeout=timeout, process=self.web)

    def logs(self) -> str:
        """The tails of every child's log, for an assertion message."""
        parts = [f"--- web\n{self.web.log_tail()}", f"--- worker\n{self.worker.log_tail()}"]
        if self.cron is not None:
            parts.append(f"--- cron\n{self.cron.log_tail()}")
        return "\n".join(parts)


def live_env(
    *, var_dir: Path, state_url: str, cache_url: str, database_url: str | None, overrides: Mapping[str, str]
) -> dict[str, str]:
    return stack_env(
        settings_module="config.settings",
        var_dir=var_dir,
        redis_url=state_url,
        cache_url=cache_url,
        database_url=database_url,
        overrides={
            "JWT_SIGNING_KEY": random_secret(),
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "METRICS_TOKEN": secrets.token_urlsafe(16),
            **overrides,
        },
    )


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
            config=GUNICORN_CONFIG,
        )
        worker = Process(
            "worker", rq_worker_command(extra_args=worker_args), env=child_env, log_path=var_dir / "worker.log"
        )
        scheduler = Process("cron", rq_cron_command(), env=child_env, log_path=var_dir / "cron.log")
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
