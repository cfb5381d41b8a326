"""gunicorn settings: `gunicorn -c config/gunicorn.py config.wsgi` (make run uses it too).

gthread workers: threads are cheap for a synchronous app whose requests mostly wait
on Redis and the database, and later features (Server-Sent Events) need them.
"""

import os

from core.redis_server import die_with_parent

bind = os.environ.get("GUNICORN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "10"))
accesslog = "-"


def post_fork(server, worker):
    # A worker whose master is gone (killed, crashed) exits instead of holding the
    # port with nobody to restart or stop it.
    die_with_parent()
