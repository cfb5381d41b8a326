"""gunicorn settings: `gunicorn -c config/gunicorn.py config.wsgi` (make run uses it too).

gthread workers, 64 threads: requests mostly wait on Redis and the database, and each
open SSE stream holds a thread (at most KESTREL_SSE_MAX_STREAMS, half by default; a cap
that would starve ordinary requests stops the worker). Bound to 127.0.0.1: in production
nginx reads every request whole before gunicorn sees it (docs/deploy.md).
"""

import os
import shutil
import tempfile

from config.pdeathsig import die_with_parent

bind = os.environ.get("GUNICORN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "64"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "10"))
accesslog = "-"


def post_fork(server, worker):
    # A worker whose master is gone (killed, crashed) exits instead of holding the
    # port with nobody to restart or stop it.
    die_with_parent()


def post_worker_init(worker):
    from feeds import sse

    # The threads actually configured (a --threads flag included), not the setting: the
    # default cap is half of them, and a cap that would let streams starve ordinary
    # requests stops the worker, and gunicorn with it ("Worker failed to boot"),
    # instead of failing under load.
    sse.worker_threads = worker.cfg.threads
    problem = sse.thread_budget_error(threads=worker.cfg.threads, streams=sse.max_streams())
    if problem:
        raise RuntimeError(problem)
    # SIGTERM ends this worker's SSE streams within a second (browsers reconnect with
    # Last-Event-ID) instead of holding the stop for the whole graceful_timeout.
    sse.end_streams_on_sigterm()


# prometheus-client's multiprocess mode: each worker writes its metrics to files here
# and /metrics (served by any one worker) sums them. Not set for rqworker, whose
# per-job forks would each leave files behind.
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"kestrel-prometheus-{os.getpid()}")
)


def on_starting(server):
    shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def worker_exit(server, worker):
    from core import batching

    # A stopping worker (SIGTERM, max_requests, a reload) sends the views it holds in
    # memory before it exits, within graceful_timeout. If Redis cannot take them, they
    # are logged as lost with their count.
    batching.flush_all()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
