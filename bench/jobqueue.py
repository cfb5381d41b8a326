"""The background jobs benchmark: Kestrel's job wrapping against bare RQ, and the worker setups.

    DJANGO_SETTINGS_MODULE=config.settings python -m bench.jobqueue --jobs 200

`python -m bench` runs it as a child process on its private Redis and SQLite (the
stack's environment, with Django's locmem email backend so no email leaves the
machine); run by hand, it uses whatever REDIS_URL and database the environment names.

Three kinds of job (bench/jobs.py), all on the email queue:

- bare: `Queue.enqueue(bench.jobs.noop)`, RQ alone;
- kestrel: bench.jobs.kestrel_noop through jobs.services.job_enqueue with the email
  job's policy (the outbox row, the push after commit, retries, callback, meta), which
  in the worker reads its row and marks it done: everything Kestrel wraps around a job;
- email: the email job as POST /api/send-email queues it (email_enqueue, the person's
  quota checked), one person each.

1. Enqueue: every call timed (wall and CPU) and its SQL counted; Redis commands and
   round trips from a probe over a sample of each kind.
2. Redis per job in the production worker: each kind's sample drained alone, the
   server's count minus what a worker that finds nothing sends.
3. Worker setups (SETUPS), each draining the same shuffled mix of bare and kestrel
   jobs, started as production starts workers but with `--burst`. A job costs the time
   from the previous job's end on the same worker to its own end (RQ's timestamps), so
   start-up is not charged and the bare and wrapped jobs share the machine's noise;
   Kestrel's overhead is kestrel ms/job over bare ms/job - 1, in the same processes.
   A setup's jobs/s counts the jobs run while all its processes were working; its CPU
   time per job is read from /proc over the middle of the batch, which the machine's
   other load does not inflate as it does wall time.
4. Email jobs, drained by the single-process setups.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from devstack.processes import PROJECT_ROOT

NOOP = "bench.jobs.noop"
KESTREL_NOOP = "bench.jobs.kestrel_noop"
KESTREL_KIND = "bench-noop"  # a Job row kind of this benchmark only
KINDS = ("bare", "kestrel", "email")
SAMPLE = 20  # jobs of each kind probed for Redis traffic, enqueue and worker
WORKER_TIMEOUT = 300  # s: a worker still running after this is a failure, not a slow result


@dataclasses.dataclass(frozen=True)
class Setup:
    """How a host runs its workers: `processes` of `worker_class`, as separate commands or one pool."""

    processes: int
    pool: bool = False  # one `rqworker-pool --num-workers N` instead of N `rqworker`
    worker_class: str | None = None  # None: settings.RQ["WORKER_CLASS"], what production runs
    kinds: tuple[str, ...] = ("bare", "kestrel")
    email: bool = False  # also drain a batch of email jobs

    def describe(self) -> str:
        """`2 x rqworker`, `rqworker-pool -n 2 (rq.Worker)`: what runs, without the queues."""
        what = f"rqworker-pool -n {self.processes}" if self.pool else "rqworker"
        if not self.pool and self.processes > 1:
            what = f"{self.processes} x {what}"
        return f"{what} ({self.worker_class or 'KestrelWorker'})"

    def commands(self, queues: list[str]) -> list[list[str]]:
        chosen = ["--worker-class", self.worker_class] if self.worker_class else []
        if self.pool:
            # The pool starts every worker with RQ's scheduler, as production's rqworker has it.
            pool = ["rqworker-pool", *queues, "--num-workers", str(self.processes), "--burst", *chosen]
            return [[sys.executable, "manage.py", *pool]]
        one = ["rqworker", *queues, "--with-scheduler", "--burst", *chosen]
        return [[sys.executable, "manage.py", *one] for _ in range(self.processes)]


SETUPS: dict[str, Setup] = {
    # What production runs: Kestrel's worker (jobs.workers), one process, then a pool of two.
    "kestrel": Setup(1, email=True),
    "pool-kestrel-2": Setup(2, pool=True),
    "procs-kestrel-2": Setup(2),
    # RQ's own: its forking worker (a child per job), alone and in a pool; its SimpleWorker,
    # the base of Kestrel's, to show what Kestrel's worker class adds.
    "fork": Setup(1, worker_class="rq.Worker", email=True),
    "pool-fork-2": Setup(2, pool=True, worker_class="rq.Worker"),
    "simple": Setup(1, worker_class="rq.SimpleWorker", kinds=("bare",)),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.jobqueue", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs of each kind per setup (default 200)")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--log-dir", type=Path, default=Path("."), help="where the workers' output goes")
    parser.add_argument("--seed", type=int, default=1, help="the shuffle of the mixed batches")
    args = parser.parse_args(argv)
    setups = [name for name in args.setups.split(",") if name]
    if set(setups) - set(SETUPS) or not setups or args.jobs < 2:
        parser.error("unknown setup, or --jobs below 2")

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    print(json.dumps(run(jobs=args.jobs, setups=setups, log_dir=args.log_dir, seed=args.seed)))
    return 0


def run(*, jobs: int, setups: list[str], log_dir: Path, seed: int) -> dict:
    from django.conf import settings

    from core.redis import get_redis
    from jobs.queues import WORKER_QUEUES

    client = get_redis("queue")  # RQ's server: its jobs, and the commands counted
    enqueuer = Enqueuer(people=jobs + SAMPLE)
    # What the set-up enqueued (the benchmark user's welcome email) goes first, untimed.
    if any(_waiting().values()):
        _drain(SETUPS["kestrel"], log_dir / "rqworker-setup.log")
    _check_empty()

    idle = _drain(SETUPS["kestrel"], log_dir / "rqworker-idle.log", client)
    per_kind = {}
    for kind in KINDS:
        with enqueuer.probe(client) as probe:
            ids = [enqueuer.enqueue(kind) for _ in range(SAMPLE)]
        drained = _drain(SETUPS["kestrel"], log_dir / f"rqworker-sample-{kind}.log", client)
        _check_finished(kind, ids, client)
        per_kind[kind] = {
            "enqueue_redis": probe.traffic.per(SAMPLE),
            "worker_redis": _worker_redis(drained, idle, SAMPLE),
        }

    rng = random.Random(seed)  # noqa: S311 - the order of a benchmark batch, not a secret
    batches = []
    for name in setups:
        setup = SETUPS[name]
        order = [kind for kind in setup.kinds for _ in range(jobs)]
        rng.shuffle(order)
        batches.append(_batch(name, setup, order, enqueuer, log_dir, client))
        if setup.email:
            batches.append(_batch(name, setup, ["email"] * jobs, enqueuer, log_dir, client))

    for kind in KINDS:
        per_kind[kind]["enqueue"] = enqueuer.figures(kind)
    return {
        "jobs": jobs,
        "queues": list(WORKER_QUEUES),
        "worker_class": settings.RQ.get("WORKER_CLASS", "rq.Worker"),
        "email_backend": settings.EMAIL_BACKEND,
        "setups": {
            name: {
                "processes": SETUPS[name].processes,
                "command": " ".join(SETUPS[name].commands(list(WORKER_QUEUES))[0][1:]),
                "runs": SETUPS[name].describe(),
            }
            for name in setups
        },
        "kinds": per_kind,
        "batches": batches,
        "overhead": {
            batch["setup"]: batch["kinds"]["kestrel"]["ms_per_job"] / batch["kinds"]["bare"]["ms_per_job"] - 1
            for batch in batches
            if {"bare", "kestrel"} <= set(batch["kinds"])
        },
    }


class Enqueuer:
    """Enqueues one job of a kind at a time, as its caller would, and keeps each call's cost."""

    def __init__(self, *, people: int) -> None:
        import django_rq

        from accounts.models import User
        from jobs.queues import EMAIL_JOB, POLICIES

        # The Kestrel no-op gets the email job's policy: queue, timeout, retries, TTLs.
        POLICIES[KESTREL_KIND] = dataclasses.replace(POLICIES[EMAIL_JOB], func=KESTREL_NOOP)
        self.queue = django_rq.get_queue(POLICIES[EMAIL_JOB].queue, commit_mode="auto")
        self.owner = User.objects.order_by("pk").first()
        # Each email is asked for by its own person, within their quota, as the API would see it.
        token = secrets.token_hex(4)
        User.objects.bulk_create(
            [User(username=f"jobsbench{token}{n}", email=f"jobsbench{token}{n}@example.com") for n in range(people)]
        )
        self.people = list(User.objects.filter(username__startswith=f"jobsbench{token}"))
        self.emails = 0
        self.samples: dict[str, list[tuple[float, float, int]]] = defaultdict(list)

    def enqueue(self, kind: str) -> str:
        """Enqueue one job of `kind`, timed; its RQ id."""
        from django.db import connection

        from jobs.services import email_enqueue, job_enqueue

        queries = 0

        def count_query(execute, sql, params, many, context):
            nonlocal queries
            queries += 1
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count_query):
            wall, cpu = time.perf_counter(), time.process_time()
            if kind == "bare":
                job_id = self.queue.enqueue(NOOP).id
            elif kind == "kestrel":
                # Outside any transaction, as a view runs: the push after commit is inside the timing.
                job_id = str(job_enqueue(kind=KESTREL_KIND, owner=self.owner, payload={}).pk)
            else:
                person = self.people[self.emails % len(self.people)]
                self.emails += 1
                job = email_enqueue(
                    to=person.email, subject="Benchmark", body="Nothing leaves the machine.", owner=person
                )
                job_id = str(job.pk)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        self.samples[kind].append((wall * 1000, cpu * 1000, queries))
        return job_id

    def probe(self, client):
        from bench.probe import RedisProbe

        return RedisProbe(client)

    def figures(self, kind: str) -> dict:
        # The first call of a kind opened connections and loaded code: not counted.
        samples = self.samples[kind][1:]
        return {
            "calls": len(samples),
            "p50_ms": statistics.median(wall for wall, _, _ in samples),
            "mean_ms": statistics.mean(wall for wall, _, _ in samples),
            "cpu_p50_ms": statistics.median(cpu for _, cpu, _ in samples),
            "sql": statistics.mean(queries for _, _, queries in samples),
        }


def _batch(name: str, setup: Setup, order: list[str], enqueuer: Enqueuer, log_dir: Path, client) -> dict:
    """Enqueue `order`, drain it with `setup`, and what each kind cost a job there."""
    ids = {enqueuer.enqueue(kind): kind for kind in order}
    drained = _drain(setup, log_dir / f"rqworker-{name}-{'-'.join(sorted(set(order)))}.log", queued=len(order))
    jobs = _check_finished(name, list(ids), client)
    costs: dict[str, list[float]] = defaultdict(list)
    runs: dict[str, list] = defaultdict(list)
    for job in jobs:
        runs[job.worker_name].append(job)
    for run in runs.values():
        run.sort(key=lambda job: job.ended_at)
        # A worker's first job has no previous end: its cost would include the start-up.
        for before, job in zip(run, run[1:], strict=False):
            costs[ids[job.id]].append((job.ended_at - before.ended_at).total_seconds() * 1000)
    # Throughput while every process of the setup was taking jobs.
    start = max(run[0].started_at for run in runs.values())
    end = min(run[-1].ended_at for run in runs.values())
    counted = [job for job in jobs if job.started_at >= start and job.ended_at <= end]
    if (end - start).total_seconds() < 0.5 or len(counted) < len(jobs) // 2:
        start, end, counted = min(j.started_at for j in jobs), max(j.ended_at for j in jobs), jobs
    seconds = (end - start).total_seconds()
    return {
        "setup": name,
        "jobs": len(jobs),
        "processes_used": len(runs),
        "jobs_per_s": len(counted) / seconds if seconds > 0 else float("nan"),
        # What a job costs a core, whatever else the machine was running.
        "cpu_ms_per_job": drained["cpu_ms_per_job"],
        "kinds": {
            kind: {
                "jobs": len(values),
                # The median: a worker descheduled by another process on the machine costs
                # one job a long pause, whichever kind it was running.
                "ms_per_job": statistics.median(values),
                "mean_ms_per_job": statistics.mean(values),
                # One process's rate for this kind alone.
                "jobs_per_s_per_process": 1000 / statistics.median(values),
            }
            for kind, values in sorted(costs.items())
        },
        "startup_s": (min(job.started_at for job in jobs) - drained["began"]).total_seconds(),
        "wall_s": drained["wall_s"],
    }


# --- Report (python -m bench prints these lines) ---------------------------------------

KIND_LABELS = {
    "bare": "Queue.enqueue(noop): RQ alone",
    "kestrel": "job_enqueue: outbox row, policy, push after commit",
    "email": "email_enqueue as POST /api/send-email (quota)",
}


def report_lines(result: dict) -> list[str]:
    from devstack.report import format_table

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None or value != value else format(value, spec)

    kinds = result["kinds"]
    bare_enqueue = kinds["bare"]["enqueue"]["p50_ms"]
    lines = [
        f"Background jobs: {result['jobs']} jobs of each kind per setup, on the email queue; "
        f"workers on `{' '.join(result['queues'])}`; email via {result['email_backend'].rsplit('.', 2)[-2]}",
        "Enqueue, one call in-process (medians):",
        format_table(
            ["job", "enqueued by", "ms", "CPU ms", "vs bare", "SQL", "Redis cmd", "round trips", "worker Redis cmd"],
            [
                [
                    kind,
                    KIND_LABELS[kind],
                    fmt(figures["enqueue"]["p50_ms"], ".2f"),
                    fmt(figures["enqueue"]["cpu_p50_ms"], ".2f"),
                    fmt(figures["enqueue"]["p50_ms"] / bare_enqueue, ".2f") + "x",
                    fmt(figures["enqueue"]["sql"], ".0f"),
                    fmt(figures["enqueue_redis"]["commands"], ".1f"),
                    fmt(figures["enqueue_redis"]["round_trips"], ".1f"),
                    fmt(figures["worker_redis"]["commands"], ".0f"),
                ]
                for kind, figures in kinds.items()
            ],
            left=2,
        ),
        "",
        "Worker setups, draining a shuffled mix of bare and kestrel no-ops (then email jobs alone):",
    ]
    rows = []
    for name, setup in result["setups"].items():
        mixed = next((b for b in result["batches"] if b["setup"] == name and "email" not in b["kinds"]), None)
        email = next((b for b in result["batches"] if b["setup"] == name and "email" in b["kinds"]), None)
        if mixed is None:
            continue
        per_kind = mixed["kinds"]
        overhead = result["overhead"].get(name)
        rows.append(
            [
                name,
                setup["runs"],
                fmt(mixed["jobs_per_s"], ",.0f"),
                fmt(mixed["cpu_ms_per_job"], ".2f"),
                fmt(per_kind.get("bare", {}).get("ms_per_job"), ".2f"),
                fmt(per_kind.get("kestrel", {}).get("ms_per_job"), ".2f"),
                "-" if overhead is None else f"{overhead:+.0%}",
                fmt(email["kinds"]["email"]["ms_per_job"], ".2f") if email else "-",
                fmt(email["jobs_per_s"], ",.0f") if email else "-",
            ]
        )
    headers = ["setup", "runs (--burst)", "jobs/s", "CPU ms/job", "bare ms", "kestrel ms", "overhead", "email ms"]
    lines.append(format_table([*headers, "email/s"], rows, left=2))
    lines += [
        "  jobs/s: the mix, while every process of the setup was working. CPU ms/job: the workers' CPU time",
        "  (work horses, pool workers and RQ's scheduler included) per job over the middle 80 % of the batch,",
        "  from /proc: the machine's other load does not change it, so 1000 / CPU ms is a setup's jobs/s per",
        "  core (Redis's own CPU apart). bare/kestrel/email ms: per process, a job's end to the next job's end",
        "  on that process, median. overhead: kestrel ms / bare ms - 1, same processes and run (target <= 10 %).",
        "  email enqueue target: <= 1 ms. Worker Redis cmd: per job, Kestrel's worker, one process.",
    ]
    return lines


def _waiting() -> dict[str, int]:
    import django_rq

    from jobs.queues import WORKER_QUEUES

    return {name: django_rq.get_queue(name).count for name in WORKER_QUEUES}


def _check_empty() -> None:
    waiting = _waiting()
    if any(waiting.values()):
        raise SystemExit(f"the queues are not empty ({waiting}): a worker would run other jobs too")


def _check_finished(what: str, ids: list[str], client) -> list:
    """The RQ jobs of `ids`, all finished (else SystemExit), and their Job rows done where they have one."""
    from rq.job import Job as RQJob
    from rq.job import JobStatus

    from jobs.models import Job

    jobs = [job for job in RQJob.fetch_many(ids, connection=client) if job is not None]
    finished = [job for job in jobs if job.get_status(refresh=False) == JobStatus.FINISHED]
    if len(finished) != len(ids):
        statuses = sorted({str(job.get_status(refresh=False)) for job in jobs})
        raise SystemExit(f"{what}: {len(finished)} of {len(ids)} jobs finished (statuses seen: {statuses})")
    rows = Job.objects.filter(pk__in=ids)
    if rows.filter(completed_at__isnull=True).exists():
        raise SystemExit(f"{what}: {rows.filter(completed_at__isnull=True).count()} Job rows not completed")
    _check_empty()
    return finished


def _drain(setup: Setup, log_path: Path, client=None, *, queued: int = 0) -> dict:
    """Run `setup`'s workers in burst mode until the queues are empty.

    With `client`, count the Redis commands. With `queued` jobs waiting on the email
    queue, also the workers' CPU time per job while they take the middle 80 % of them:
    sampled from /proc, so neither start-up nor the machine's other load is counted.
    """
    import django_rq

    from bench.probe import command_calls
    from config.pdeathsig import die_with_parent
    from jobs.queues import EMAIL, WORKER_QUEUES

    commands = setup.commands(list(WORKER_QUEUES))
    queue = django_rq.get_queue(EMAIL)
    before = command_calls(client) if client is not None else None
    samples: list[tuple[int, float]] = []  # (jobs still waiting, CPU seconds of the workers)
    began = datetime.datetime.now(datetime.UTC)
    deadline = time.monotonic() + WORKER_TIMEOUT
    with log_path.open("ab") as log:
        processes = [
            subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env=os.environ.copy(),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
            for command in commands
        ]
        try:
            marks = [queued * 9 // 10, queued // 10] if queued >= 10 else []
            while any(process.poll() is None for process in processes) and time.monotonic() < deadline:
                left = queue.count if marks else 0
                if marks and left <= marks[0]:
                    marks.pop(0)
                    samples.append((left, _tree_cpu([process.pid for process in processes])))
                time.sleep(0.01)
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.wait()
    codes = [process.returncode for process in processes]
    finished = datetime.datetime.now(datetime.UTC)
    if any(codes):
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"`{' '.join(commands[0][1:])}` exited with {codes}:\n{tail}")
    drained = {"began": began, "wall_s": (finished - began).total_seconds(), "cpu_ms_per_job": float("nan")}
    if len(samples) == 2 and samples[0][0] > samples[1][0]:
        (left_before, cpu_before), (left_after, cpu_after) = samples
        drained["cpu_ms_per_job"] = (cpu_after - cpu_before) / (left_before - left_after) * 1000
    if client is not None:
        delta = command_calls(client) - before
        delta["info"] -= 1
        drained["by_command"] = {name: calls for name, calls in delta.items() if calls > 0}
    return drained


def _tree_cpu(roots: list[int]) -> float:
    """CPU seconds of the processes `roots` and all their descendants, living or reaped (/proc)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # ended meanwhile: its time is in its parent's reaped children's
        # The command name, in parentheses, may hold spaces: fields are counted after it.
        fields = text[text.rindex(")") + 2 :].split()
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        # utime, stime, and the same of reaped children (work horses, RQ's scheduler).
        cpu[pid] = sum(int(value) for value in fields[11:15]) / tick
    tree, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(cpu.get(pid, 0.0) for pid in tree)


def _worker_redis(drained: dict, idle: dict, jobs: int) -> dict:
    """Redis commands per job: the drain's count minus an idle worker's."""
    by_command = {
        name: (calls - idle["by_command"].get(name, 0)) / jobs
        for name, calls in sorted(drained["by_command"].items())
        if calls - idle["by_command"].get(name, 0) > 0
    }
    return {"commands": sum(by_command.values()), "by_command": by_command}


if __name__ == "__main__":
    sys.exit(main())
