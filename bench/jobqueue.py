"""The background jobs benchmark: jobs per second through a real RQ worker, and what each costs Redis.

    DJANGO_SETTINGS_MODULE=config.settings python -m bench.jobqueue --jobs 300

`python -m bench` runs it as a child process on its private Redis and SQLite (the
stack's environment, with Django's locmem email backend so no email leaves the
machine); run by hand, it uses whatever REDIS_URL and database the environment names.

For each worker (the forking worker production runs, then RQ's SimpleWorker for
comparison) and each kind of job (bench.jobs.noop, and the email job through
jobs.services.email_enqueue and its outbox row):

1. enqueue `--jobs` jobs, timing each enqueue (and its SQL queries and Redis traffic);
2. start the worker as production does, `manage.py rqworker email reports default`
   (jobs.queues.WORKER_QUEUES), with `--burst` so it exits once the queues are empty;
3. jobs/s: the jobs over the time from the first job's start to the last job's end,
   both from RQ's own timestamps, so Django's start-up in the worker is not charged
   to the jobs (it is reported apart);
4. Redis commands per job: the server's count over the worker's whole life, minus
   what a worker that finds no job at all sends (start, registration, maintenance,
   exit), over the jobs.

Production starts the worker with `--with-scheduler` and without `--burst`: it then
waits in one BLPOP over the three queues, where a burst worker sends one LPOP per
queue until one answers (two more for a job on `default`, none for one on `email`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.jobs import noop

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOOP = f"{noop.__module__}.{noop.__name__}"
KINDS = ("noop", "email")
# --worker-class of `manage.py rqworker`; None: settings.RQ["WORKER_CLASS"], as in production.
WORKERS: dict[str, str | None] = {"fork": None, "simple": "rq.SimpleWorker"}
WORKER_TIMEOUT = 300  # s: a worker still running after this is a failure, not a slow result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jobqueue", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300, help="jobs per kind and worker (default 300)")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--workers", default=",".join(WORKERS), help=f"comma-separated, of {', '.join(WORKERS)}")
    parser.add_argument("--log-dir", type=Path, default=Path("."), help="where the workers' output goes")
    args = parser.parse_args(argv)
    kinds = [kind for kind in args.kinds.split(",") if kind]
    workers = [worker for worker in args.workers.split(",") if worker]
    if set(kinds) - set(KINDS) or set(workers) - set(WORKERS) or args.jobs < 1:
        parser.error("unknown kind or worker, or --jobs below 1")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    print(json.dumps(run(jobs=args.jobs, kinds=kinds, workers=workers, log_dir=args.log_dir)))
    return 0


def run(*, jobs: int, kinds: list[str], workers: list[str], log_dir: Path) -> dict:
    from django.conf import settings

    from core.redis import get_redis
    from jobs.queues import WORKER_QUEUES

    client = get_redis("state")
    # What the set-up enqueued (the benchmark user's welcome email) goes first, untimed.
    if any(_waiting().values()):
        _drain(workers[0], log_dir / "rqworker-setup.log", client)
    _check_empty()
    variants = []
    idle = {}
    for worker in workers:
        # What a worker sends when there is nothing to do: subtracted from every run below.
        idle[worker] = _drain(worker, log_dir / f"rqworker-{worker}-idle.log", client)
        for kind in kinds:
            enqueued = _enqueue(kind, jobs, client)
            drained = _drain(worker, log_dir / f"rqworker-{worker}-{kind}.log", client)
            variants.append({"kind": kind, "worker": worker, **_figures(kind, enqueued, drained, idle[worker], client)})
            _check_empty()
    return {
        "jobs": jobs,
        "queues": list(WORKER_QUEUES),
        "worker_class": settings.RQ.get("WORKER_CLASS", "rq.Worker"),
        "email_backend": settings.EMAIL_BACKEND,
        "idle": {worker: {"commands": drain["commands"], "wall_s": drain["wall_s"]} for worker, drain in idle.items()},
        "variants": variants,
    }


def _waiting() -> dict[str, int]:
    import django_rq

    from jobs.queues import WORKER_QUEUES

    return {name: django_rq.get_queue(name).count for name in WORKER_QUEUES}


def _check_empty() -> None:
    waiting = _waiting()
    if any(waiting.values()):
        raise SystemExit(f"the queues are not empty ({waiting}): a worker would run other jobs too")


def _enqueue(kind: str, count: int, client) -> dict:
    """Enqueue `count` jobs of `kind`, each timed on its own; their ids and the cost."""
    import django_rq
    from django.db import connection

    from accounts.models import User
    from bench.probe import RedisProbe
    from jobs.queues import DEFAULT
    from jobs.services import email_enqueue

    owner = User.objects.order_by("pk").first()
    queue = django_rq.get_queue(DEFAULT, commit_mode="auto")
    queries = 0

    def count_query(execute, sql, params, many, context):
        nonlocal queries
        queries += 1
        return execute(sql, params, many, context)

    def enqueue_one(n: int) -> str:
        if kind == "noop":
            return queue.enqueue(NOOP).id
        # Outside any transaction, so the push after commit runs at once, inside the timing:
        # the Job row's INSERT, the push (one SELECT, the enqueue, one UPDATE).
        job = email_enqueue(
            to=f"reader{n}@example.com",
            subject="Benchmark",
            body="Nothing leaves the machine.",
            owner=owner,
            requested=False,  # thousands for one owner: a person's quota would stop the run
        )
        return str(job.pk)

    # Untimed: opens the connections and loads the code. Its job is drained with the rest.
    ids, times = [enqueue_one(-1)], []
    with RedisProbe(client) as probe, connection.execute_wrapper(count_query):
        for n in range(count - 1):
            began = time.perf_counter()
            ids.append(enqueue_one(n))
            times.append(time.perf_counter() - began)
    measured = count - 1
    return {
        "ids": ids,
        "ms": statistics.mean(times) * 1000 if times else float("nan"),
        "p50_ms": statistics.median(times) * 1000 if times else float("nan"),
        "sql": queries / measured if measured else float("nan"),
        "redis": probe.traffic.per(measured) if measured else None,
    }


def _drain(worker: str, log_path: Path, client) -> dict:
    """Run a burst worker as production starts one, until the queues are empty."""
    from bench.probe import command_calls
    from core.redis_server import die_with_parent
    from jobs.queues import WORKER_QUEUES

    command = [sys.executable, "manage.py", "rqworker", *WORKER_QUEUES, "--burst"]
    if WORKERS[worker]:
        command += ["--worker-class", WORKERS[worker]]
    before = command_calls(client)
    began = datetime.datetime.now(datetime.UTC)
    with log_path.open("ab") as log:
        result = subprocess.run(
            command,
            cwd=PROJECT_ROOT,
            env=os.environ.copy(),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=WORKER_TIMEOUT,
            check=False,
            preexec_fn=die_with_parent,
        )
    finished = datetime.datetime.now(datetime.UTC)
    after = command_calls(client)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"`{' '.join(command[1:])}` exited with {result.returncode}:\n{tail}")
    delta = after - before
    delta["info"] -= 1
    return {
        "began": began,
        "finished": finished,
        "wall_s": (finished - began).total_seconds(),
        "commands": sum(calls for calls in delta.values() if calls > 0),
        "by_command": {name: calls for name, calls in delta.items() if calls > 0},
    }


def _figures(kind: str, enqueued: dict, drained: dict, idle: dict, client) -> dict:
    from rq.job import Job as RQJob
    from rq.job import JobStatus

    ids = enqueued["ids"]
    count = len(ids)
    rq_jobs = [job for job in RQJob.fetch_many(ids, connection=client) if job is not None]
    finished = [job for job in rq_jobs if job.get_status(refresh=False) == JobStatus.FINISHED]
    if len(finished) != count:
        statuses = sorted({str(job.get_status(refresh=False)) for job in rq_jobs})
        raise SystemExit(f"{kind}: {len(finished)} of {count} jobs finished (statuses seen: {statuses})")
    if kind == "email":
        from jobs.models import Job

        sent = Job.objects.filter(pk__in=ids, completed_at__isnull=False).count()
        if sent != count:
            raise SystemExit(f"email: {sent} of {count} Job rows completed")
    first_start = min(job.started_at for job in finished)
    last_end = max(job.ended_at for job in finished)
    busy = (last_end - first_start).total_seconds()
    commands = drained["commands"] - idle["commands"]
    by_command = {
        name: (calls - idle["by_command"].get(name, 0)) / count
        for name, calls in sorted(drained["by_command"].items())
        if calls - idle["by_command"].get(name, 0) > 0
    }
    return {
        "jobs": count,
        "jobs_per_s": count / busy if busy > 0 else float("nan"),
        "ms_per_job": busy / count * 1000,
        # Django's start-up in the worker, to the first job; and from the last job to its exit.
        "startup_s": (first_start - drained["began"]).total_seconds(),
        "exit_s": (drained["finished"] - last_end).total_seconds(),
        "wall_s": drained["wall_s"],
        "redis_commands_per_job": commands / count,
        "redis_by_command_per_job": by_command,
        "enqueue_ms": enqueued["ms"],
        "enqueue_p50_ms": enqueued["p50_ms"],
        "enqueue_sql": enqueued["sql"],
        "enqueue_redis": enqueued["redis"],
    }


if __name__ == "__main__":
    sys.exit(main())
