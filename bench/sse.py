"""Live-notification latency: from notify() in one process to a browser's read of the SSE event.

Runs in the harness (no Django here): `--streams` users, each logged in with a session
made in a child process (bench.fixtures.stream_sessions), open GET
/api/notifications/stream against a gunicorn of its own, started as production runs
SSE (gthread workers, config/gunicorn.py's hooks, so SIGTERM ends the streams at
once). Each stream is read by a thread with http.client, line by line, as a browser's
EventSource would. Once every stream has sent its first line (the response has
started, so the server has subscribed), a child process (bench/notifier.py) calls
feeds.notifications.notify for those users in turn at a steady rate, stamping each
with the wall-clock time; each reader subtracts that stamp from the time it read the
event.

The server gets more threads (and a higher stream cap) than production's 64 and 32
per worker: gthread workers do not share connections evenly (docs/design.md, reference figures), and a
worker that took more than its cap of the streams would answer 503s, which this
benchmark is not about.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bench.harness import SESSION_COOKIE, BenchError, percentile, run_child
from devstack.processes import HOST
from devstack.web import GUNICORN_CONFIG, Gunicorn

if TYPE_CHECKING:
    from bench.harness import BenchContext

STREAM_PATH = "/api/notifications/stream"
WORKERS = 2
# Per worker: every stream could land on one worker, and a few threads are left for
# the plain requests (the health check).
THREADS_SPARE = 8
# A worker refuses to boot when streams could take more than this share of its threads
# (feeds.sse.STREAM_THREAD_SHARE_MAX; not imported: no Django in the harness).
STREAM_THREAD_SHARE_MAX = 0.75
OPEN_TIMEOUT = 30.0  # s for every stream to open
DRAIN_TIMEOUT = 10.0  # s after the last notification is sent for the last to arrive
READ_TIMEOUT = 60.0  # s a read may block; readers are unblocked by shutting their socket down


@dataclass
class StreamReader:
    """One browser: a thread reading one user's stream."""

    port: int
    user_id: int
    session_key: str
    expected: int = 0
    opened: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    latencies: list[float] = field(default_factory=list)  # seconds, publish to read
    status: int | None = None
    error: str | None = None
    _conn: http.client.HTTPConnection | None = None

    def run(self) -> None:
        try:
            self._conn = http.client.HTTPConnection(HOST, self.port, timeout=READ_TIMEOUT)
            self._conn.request(
                "GET",
                STREAM_PATH,
                headers={"Cookie": f"{SESSION_COOKIE}={self.session_key}", "Accept": "text/event-stream"},
            )
            response = self._conn.getresponse()
            self.status = response.status
            if response.status != 200:
                self.error = f"{response.status}: {response.read(300)!r}"
                return
            response.readline()  # "retry: ...": the server has subscribed
            self.opened.set()
            while line := response.readline():
                if not line.startswith(b"data: "):
                    continue
                read_at = time.time()
                data = json.loads(line[6:]).get("data", {})
                if "sentAt" not in data:
                    continue  # the publisher's warm-up
                self.latencies.append(read_at - data["sentAt"])
                if len(self.latencies) >= self.expected:
                    self.done.set()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if self.error is None and not self.done.is_set():
                self.error = repr(exc)
        finally:
            self.opened.set()  # never leave the main thread waiting on a failed open
            self.done.set()
            if self._conn is not None:
                self._conn.close()

    def close(self) -> None:
        """Unblock the reader: its read ends, and the reader closes the connection itself
        (closing it from here would race the read inside http.client)."""
        sock = self._conn.sock if self._conn is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def measure_sse_latency(ctx: BenchContext, *, streams: int, notifications: int, rate: float) -> dict:
    sessions = ctx.shell_json(f"from bench.fixtures import stream_sessions; stream_sessions(count={streams})")
    sessions = sessions["sessions"]
    cap = streams + 1
    server = Gunicorn(
        env=ctx.env,
        log_path=ctx.var_dir / "gunicorn-sse.log",
        worker_class="gthread",
        workers=WORKERS,
        threads=max(cap + THREADS_SPARE, math.ceil(cap / STREAM_THREAD_SHARE_MAX)),
        overrides={"KESTREL_SSE_MAX_STREAMS": str(cap)},
        config=GUNICORN_CONFIG,
    )
    ctx.stack.callback(server.stop)
    server.start()
    ctx.log(f"sse: {server.description} on http://{HOST}:{server.port}; {streams} streams")
    readers = [StreamReader(server.port, user_id, key) for user_id, key in sessions]
    for index in range(notifications):
        readers[index % streams].expected += 1
    threads = [threading.Thread(target=reader.run, daemon=True) for reader in readers]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + OPEN_TIMEOUT
        for reader in readers:
            reader.opened.wait(max(0.0, deadline - time.monotonic()))
        failed = [reader for reader in readers if reader.error or not reader.opened.is_set()]
        if failed:
            raise BenchError(
                f"{len(failed)} of {streams} notification streams did not open; first: "
                f"user {failed[0].user_id}: {failed[0].error or 'no answer'}\n{server.log_tail()}"
            )
        ctx.log(f"sse: {streams} streams open; publishing {notifications} notifications at {rate:g}/s")
        users = ",".join(str(reader.user_id) for reader in readers)
        sent = run_child(ctx, "bench.notifier", [f"--users={users}", f"--count={notifications}", f"--rate={rate}"])
        deadline = time.monotonic() + DRAIN_TIMEOUT
        for reader in readers:
            reader.done.wait(max(0.0, deadline - time.monotonic()))
    finally:
        for reader in readers:
            reader.close()
        for thread in threads:
            thread.join(timeout=5)
        server.stop()

    latencies = sorted(latency * 1000 for reader in readers for latency in reader.latencies)
    errors = [f"user {reader.user_id}: {reader.error}" for reader in readers if reader.error]
    return {
        "streams": streams,
        "server": server.description,
        "notifications": notifications,
        "rate": rate,
        "publisher": sent,
        "delivered": len(latencies),
        "missing": notifications - len(latencies),
        "p50_ms": percentile(latencies, 0.50),
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "errors": errors[:5],
    }
