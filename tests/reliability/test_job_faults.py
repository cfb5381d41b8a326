"""An RQ worker SIGKILLed in the middle of a job, with more jobs queued behind it.

People ask for emails (`POST /api/send-email`) and activity reports (`POST /api/reports`);
the worker is killed, with its work horse, while it builds a report; more jobs are
asked for while no worker runs; a new worker starts, as a supervisor would start it.
Every job the site acknowledged (202 with a job id) must then finish, the killed one
included (RQ runs a job at least once), and act exactly once: one email per email job,
one report file and row and one "report ready" email per report job.

The workers run tests/reliability/workers.PromptWorker: Kestrel's worker with its
liveness intervals at a second, so the killed job is noticed in seconds. The report
states production's bound, computed from jobs/queues.py.
"""

from __future__ import annotations

import re
from collections import Counter

import redis
from rq.job import Job, JobStatus

from jobs.queues import JOB_MONITORING_INTERVAL, MAINTENANCE_INTERVAL, POLICIES, REPORT_JOB, WORKER_TTL
from tests.live import live_kestrel
from tests.reliability import workers
from tests.reliability.traffic import (
    CPU_MARGIN,
    TRAFFIC_ENV,
    Client,
    FaultWindow,
    Traffic,
    create_members,
    fault_problems,
    scenario_report,
    shell_json,
    wait_until,
)

REPORT_POSTS = 40_000  # posts of the member whose report is killed: a build of about half a second
# Within a member's email quota (jobs.queues.QUOTAS: 10 an hour), as a person's would be.
EMAILS_BEFORE = 6  # email jobs per member before the kill
EMAILS_DURING = 3  # and per member while no worker runs
WORKER_DOWN = 1.0  # seconds between the kill and the new worker, a supervisor's restart delay
RQ_GRACE = 60  # RQ's fixed grace on a running job's deadline (tests/jobs/fault_jobs.RQ_HEARTBEAT_GRACE)

# The latest the killed job is noticed with PromptWorker's intervals: its deadline (a
# heartbeat interval and the grace after the kill), then one dequeue wait and one
# maintenance interval at most.
DETECTION_BOUND = (
    workers.JOB_MONITORING_INTERVAL + workers.GRACE + (workers.WORKER_TTL - 15) + workers.MAINTENANCE_INTERVAL
)
# Then the report job waits its retry's backoff (full jitter, at most base * 2 s) and runs again.
RETRY_WAIT_BOUND = POLICIES[REPORT_JOB].backoff_base * 2
# A retry is a scheduled job, moved to its queue by a worker's scheduler; the killed
# worker's scheduler held the scheduler lock, which RQ lets expire (its interval + 60 s)
# before another scheduler takes over. With production's intervals the killed job is
# noticed after the lock has gone; here it is noticed first, and its retry waits for it.
SCHEDULER_LOCK_TTL = 1 + 60
KILLED_JOB_BOUND = DETECTION_BOUND + SCHEDULER_LOCK_TTL + RETRY_WAIT_BOUND + 5
# With production's intervals (jobs/queues.py): the same sum, about three minutes at worst.
PRODUCTION_DETECTION_BOUND = JOB_MONITORING_INTERVAL + RQ_GRACE + (WORKER_TTL - 15) + MAINTENANCE_INTERVAL


def _login(client: Client, member) -> None:
    answer = client.call(
        "POST", "/api/login", endpoint="POST /api/login", body={"email": member.email, "password": member.password}
    )
    assert answer.status == 200, answer


def _ask_email(client: Client, member, token: str) -> str:
    answer = client.call(
        "POST",
        "/api/send-email",
        endpoint="POST /api/send-email",
        ok=(202,),
        body={"email": member.email, "subject": f"reliability {token}", "message": f"Job {token}."},
    )
    assert answer.status == 202, answer
    return answer.data["jobId"]


def _ask_report(client: Client) -> str:
    answer = client.call("POST", "/api/reports", endpoint="POST /api/reports", ok=(202,), body={})
    assert answer.status == 202, answer
    return answer.data["jobId"]


def test_a_worker_killed_mid_job_loses_no_job_and_repeats_no_effect():
    with live_kestrel(env=TRAFFIC_ENV, worker_args=workers.WORKER_ARGS) as site:
        members = create_members(site, 3, prefix="jobs")
        reporter = members[0]
        site.shell(
            "import os\n"
            "from posts.models import Post\n"
            "author = int(os.environ['LIVE_AUTHOR'])\n"
            "Post.objects.bulk_create([Post(author_id=author, title=f'Archive {n}', content='An old note.')"
            " for n in range(int(os.environ['LIVE_POSTS']))], batch_size=5000)\n",
            env={"LIVE_AUTHOR": str(reporter.user_id), "LIVE_POSTS": str(REPORT_POSTS)},
        )
        # Web traffic beside the jobs: the site must not notice the worker's death.
        traffic = Traffic(site, create_members(site, 4, prefix="jobsweb"), budget=20_000, seed=41, pause=0.05)
        recorder = traffic.recorder
        clients = {m.user_id: Client(site.port, recorder, address=f"10.8.0.{n + 1}") for n, m in enumerate(members)}
        rq = redis.Redis(port=site.state.port)
        emails: dict[str, str] = {}  # job id -> token in its subject
        reports: list[str] = []
        owners: dict[str, Client] = {}  # job id -> its owner's client
        try:
            traffic.start()
            for member in members:
                _login(clients[member.user_id], member)
            for n in range(EMAILS_BEFORE):
                for member in members:
                    token = f"before-{member.username}-{n}"
                    job_id = _ask_email(clients[member.user_id], member, token)
                    emails[job_id], owners[job_id] = token, clients[member.user_id]
            # The report of 40,000 posts: kill the worker while its horse builds it.
            killed = _ask_report(clients[reporter.user_id])
            reports.append(killed)
            owners[killed] = clients[reporter.user_id]
            job = Job(killed, connection=rq)
            assert wait_until(lambda: job.get_status(refresh=True) == JobStatus.STARTED, timeout=60, interval=0.005), (
                f"the report job never started:\n{site.logs()}"
            )
            start = recorder.mark("fault_start")
            site.worker.kill()
            status_after_kill = job.get_status(refresh=True)
            # "started" from the API also means the job's row is not completed.
            seen_after_kill = clients[reporter.user_id].call(
                "GET", f"/api/jobs/{killed}", endpoint="GET /api/jobs/{id}"
            )
            for member in members[1:]:
                job_id = _ask_report(clients[member.user_id])
                reports.append(job_id)
                owners[job_id] = clients[member.user_id]
            for n in range(EMAILS_DURING):
                for member in members:
                    token = f"during-{member.username}-{n}"
                    job_id = _ask_email(clients[member.user_id], member, token)
                    emails[job_id], owners[job_id] = token, clients[member.user_id]
            wait_until(lambda: recorder.now() >= start + WORKER_DOWN, timeout=WORKER_DOWN + 1, interval=0.02)
            site.worker.start()
            end = recorder.mark("fault_end")

            # Recovery: the killed job noticed (no longer STARTED); every other job finished;
            # then the killed one, through its retry.
            everyone = list(emails) + reports

            def finished(job_ids) -> bool:
                return all(Job(i, connection=rq).get_status(refresh=True) == JobStatus.FINISHED for i in job_ids)

            noticed = wait_until(
                lambda: job.get_status(refresh=True) != JobStatus.STARTED, timeout=DETECTION_BOUND + 30, interval=0.05
            )
            noticed_at = recorder.now() - end
            others_done = wait_until(lambda: finished(set(everyone) - {killed}), timeout=60, interval=0.1)
            others_done_at = recorder.now() - end
            killed_done = wait_until(lambda: finished([killed]), timeout=KILLED_JOB_BOUND + 10, interval=0.05)
            killed_done_at = recorder.now() - end
            all_done = finished(everyone)
            # Every job as its owner sees it through the API.
            api_status = {
                job_id: owners[job_id].call("GET", f"/api/jobs/{job_id}", endpoint="GET /api/jobs/{id}").data
                for job_id in everyone
            }
            downloads = {
                job_id: owners[job_id].call("GET", f"/api/reports/{job_id}", endpoint="GET /api/reports/{id}").status
                for job_id in reports
            }
            retries_left = Job.fetch(killed, connection=rq).retries_left
            for job_id in emails:
                traffic.ledger.jobs[job_id] = "email"
            for job_id in reports:
                traffic.ledger.jobs[job_id] = "report"
            stored = shell_json(
                site,
                "import json\n"
                "from jobs.models import Job, Report\n"
                "print(json.dumps({'completed': [str(pk) for pk in Job.objects.exclude(completed_at=None)"
                ".values_list('pk', flat=True)], 'reports': [str(pk) for pk in Report.objects.values_list('job_id',"
                " flat=True)]}))\n",
            )
            mail = site.sent_mail()
            traffic.stop()
        finally:
            for client in clients.values():
                client.close()
            rq.close()
            traffic.world.stop.set()

        subjects = Counter(m for text in mail for m in re.findall(r"^Subject: reliability (\S+)$", text, re.MULTILINE))
        ready = Counter(m for text in mail for m in re.findall(r"/api/reports/([0-9a-f-]{36})", text))
        acknowledged = set(emails) | set(reports)
        problems = []
        if status_after_kill != JobStatus.STARTED or seen_after_kill.data.get("status") != "started":
            problems.append(f"the report job was not killed mid-run: {status_after_kill}, {seen_after_kill.data}")
        if not (noticed and others_done and killed_done and all_done):
            problems.append(
                f"jobs left unfinished: killed job noticed {noticed}, others done {others_done},"
                f" killed job done {killed_done}, all {all_done}"
            )
        if noticed_at > DETECTION_BOUND + CPU_MARGIN:
            problems.append(f"the killed job was noticed {noticed_at:.1f} s after the new worker started")
        if killed_done_at > KILLED_JOB_BOUND:
            problems.append(f"the killed job finished {killed_done_at:.1f} s after the new worker started")
        lost = sorted(acknowledged - set(stored["completed"]))
        if lost:
            problems.append(f"acknowledged jobs never completed: {lost}")
        not_finished = {job_id: seen for job_id, seen in api_status.items() if seen.get("status") != "finished"}
        if not_finished:
            problems.append(f"the API does not show every job finished: {not_finished}")
        twice = {token: n for token, n in subjects.items() if n != 1}
        missing = sorted(set(emails.values()) - set(subjects))
        if twice or missing:
            problems.append(f"emails not sent exactly once: repeated {twice}, missing {missing}")
        if sorted(stored["reports"]) != sorted(reports) or any(ready[job_id] != 1 for job_id in reports):
            problems.append(f"reports not made exactly once: rows {stored['reports']}, ready emails {dict(ready)}")
        if any(status != 200 for status in downloads.values()):
            problems.append(f"report downloads: {downloads}")
        if retries_left != POLICIES[REPORT_JOB].retries - 1:
            problems.append(f"the killed job did not run again through its retry: retries left {retries_left}")

        result = scenario_report(
            "rq-worker-killed",
            title="RQ worker SIGKILLed (with its work horse) while building a report, jobs queued behind it",
            traffic=traffic,
            fault=FaultWindow(start=start, end=end),
            bounds={
                "detection s (PromptWorker: heartbeat + grace + dequeue wait + maintenance)": DETECTION_BOUND,
                "retry backoff s (reports, at most)": RETRY_WAIT_BOUND,
                "killed job finished s (detection + scheduler lock + backoff + 5)": KILLED_JOB_BOUND,
                "production detection s (jobs/queues.py + RQ's 60 s grace)": PRODUCTION_DETECTION_BOUND,
            },
            settings={
                "worker": "tests.reliability.workers.PromptWorker (KestrelWorker, 1 s intervals, 1 s grace)",
                "production": (
                    f"heartbeat {JOB_MONITORING_INTERVAL} s + RQ grace {RQ_GRACE} s + dequeue wait {WORKER_TTL - 15} s"
                    f" + maintenance {MAINTENANCE_INTERVAL} s = {PRODUCTION_DETECTION_BOUND} s at worst"
                ),
            },
            ledger_check=None,
            extra={
                "jobs_acknowledged": {"email": len(emails), "report": len(reports)},
                "killed_job": killed,
                "status_after_kill": str(status_after_kill),
                "seen_through_the_api_after_kill": seen_after_kill.data,
                "noticed_after_new_worker_s": round(noticed_at, 2),
                "killed_job_finished_after_new_worker_s": round(killed_done_at, 2),
                "other_jobs_finished_after_new_worker_s": round(others_done_at, 2),
                "killed_job_retries_left": retries_left,
                "emails_sent": sum(subjects.values()),
                "report_ready_emails": sum(ready[job_id] for job_id in reports),
                "problems": problems,
            },
            site=site,
        )
    # The web kept answering while no worker ran.
    web = [f.endpoint for f in result.figures]
    problems += fault_problems(result, traffic, fault_cost=0.0, must_not_fail=web)
    assert not problems, "\n".join(problems) + f"\n(report: {result.path})"
