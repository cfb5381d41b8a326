"""Kestrel's web server as a child (gunicorn), and plain HTTP to it on 127.0.0.1.

Used by `make run` (devstack.run), the benchmarks and the live test stack. Standard
library only: the callers drive Kestrel from outside, as a client would.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from devstack.processes import HOST, PROJECT_ROOT, Process, StackError, free_port

GUNICORN_CONFIG = PROJECT_ROOT / "config" / "gunicorn.py"


def http_request(
    port: int, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def wait_until_healthy(port: int, *, timeout: float, process: Process | None = None) -> dict:
    """`/healthz` on 127.0.0.1:`port` answering 200; its body.

    StackError when `process` (the server) exits meanwhile or the time is up, with the
    last answer and the server's log.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and process.popen is not None and process.popen.poll() is not None:
            raise StackError(f"the {process.name} exited with {process.popen.returncode}:\n{process.log_tail()}")
        try:
            status, _, content = http_request(port, "GET", "/healthz")
        except OSError as exc:
            last = str(exc)
        else:
            if status == 200:
                return json.loads(content)
            last = f"{status} {content[:300]!r}"
        time.sleep(0.1)
    tail = f":\n{process.log_tail()}" if process is not None else ""
    raise StackError(f"/healthz did not answer 200 within {timeout:.0f} s ({last}){tail}")


class Gunicorn(Process):
    """gunicorn serving Kestrel as a child process (the settings module is the environment's).

    Options left at None are not on the command line, so `config` (or gunicorn) decides
    them: `make run` takes every one from config/gunicorn.py and the environment; the
    benchmarks set the worker class, workers and threads they measure. Without `bind`,
    a free port on 127.0.0.1. Command-line options win over the config file's.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        log_path: Path | None = None,
        config: Path | None = None,
        bind: str | None = None,
        worker_class: str | None = None,
        workers: int | None = None,
        threads: int | None = None,
        graceful_timeout: int | None = 5,
        reload: bool = False,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.overrides = dict(overrides or {})
        self.config = config
        self.bind = bind or f"{HOST}:{free_port(HOST)}"
        self.worker_class = worker_class
        self.workers = workers
        self.threads = threads
        # Short by default, so stopping at the end does not wait out the default 30 s.
        self.graceful_timeout = graceful_timeout
        self.reload = reload
        args = ["-m", "gunicorn", *(["-c", str(config)] if config else []), "config.wsgi"]
        if workers is not None:
            args += ["--workers", str(workers)]
        if worker_class is not None:
            args += ["--worker-class", worker_class]
        args += ["--bind", self.bind]
        if graceful_timeout is not None:
            args += ["--graceful-timeout", str(graceful_timeout)]
        if worker_class == "gthread" and threads is not None:
            args += ["--threads", str(threads)]
        if reload:
            args.append("--reload")
        super().__init__("web server", [sys.executable, *args], env={**env, **self.overrides}, log_path=log_path)

    @property
    def port(self) -> int:
        return int(self.bind.rpartition(":")[2])

    @property
    def description(self) -> str:
        threads = f", {self.threads} threads each" if self.worker_class == "gthread" else ""
        settings = "".join(f", {name}={value}" for name, value in sorted(self.overrides.items()))
        config = f", -c {self.config.relative_to(PROJECT_ROOT)}" if self.config else ""
        return f"gunicorn {self.workers} {self.worker_class} workers{threads}{settings}{config}"

    def variant(self, overrides: Mapping[str, str], log_path: Path | None) -> Gunicorn:
        """Another server like this one (not started, on another port), with some environment variables changed."""
        return Gunicorn(
            env=self.env,
            log_path=log_path,
            config=self.config,
            worker_class=self.worker_class,
            workers=self.workers,
            threads=self.threads,
            graceful_timeout=self.graceful_timeout,
            reload=self.reload,
            overrides={**self.overrides, **overrides},
        )

    def start(self, timeout: float | None = 60.0) -> Gunicorn:
        """Start it and wait until /healthz answers 200 (StackError after `timeout`); None: do not wait."""
        super().start()
        if timeout is not None:
            wait_until_healthy(self.port, timeout=timeout, process=self)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful: workers finish their request and exit; the session is killed after `timeout`."""
        super().stop(timeout)
