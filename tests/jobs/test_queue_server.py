"""The queue role on a server of its own (REDIS_QUEUE_URL): jobs, workers, job status,
report progress, the outbox and every figure read about queues go there, and nothing of
RQ's to the state role's server. Unset, everything stays on the state role's server."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from django.conf import settings
from django.core import mail
from django.core.cache import caches
from django.test import override_settings
from django.utils import timezone
from django_redis.pool import ConnectionFactory
from redis import Redis
from rq.job import Job as RQJob

from core.checks import check_redis_roles
from core.redis import breaker, connection_pool_options, get_redis, reported_roles, role_options
from devstack.redis_server import RedisServer
from jobs import selectors, services
from jobs.models import Job
from ops.audit import ERROR, OK, WARNING, run_audit
from ops.dashboard import ops_dashboard_get, ops_sample
from ops.monitoring import build_registry, jobs_status
from posts.models import Post
from posts.reports import report_enqueue

pytestmark = pytest.mark.django_db


def _queue_role_at(url: str) -> dict:
    """settings.CACHES as REDIS_QUEUE_URL=`url` builds them: the queue role's own entry,
    with the state role's timeouts and retries, its own pool and breaker."""
    configured = copy.deepcopy(settings.CACHES)
    state = role_options("state")
    pool = state["CONNECTION_POOL_KWARGS"]
    configured["queues"] = {
        **configured["sessions"],
        "LOCATION": url,
        "OPTIONS": connection_pool_options(
            role="queue",
            connect_timeout=state["SOCKET_CONNECT_TIMEOUT"],
            socket_timeout=state["SOCKET_TIMEOUT"],
            max_connections=pool["max_connections"],
            retries=pool["retry"].get_retries(),
        ),
    }
    return configured


@pytest.fixture
def queue_server():
    """A second private Redis server (noeviction) as the queue role for one test."""
    server = RedisServer(extra_config={"maxmemory-policy": "noeviction"}).start()
    try:
        with override_settings(CACHES=_queue_role_at(f"{server.url}/0")):
            yield server
            caches["queues"].close()
    finally:
        # django-redis keeps pools per URL for the process's life: this one's server is going.
        for url in [url for url in ConnectionFactory._pools if url.startswith(server.url)]:
            ConnectionFactory._pools.pop(url).disconnect()
        server.cleanup()


@pytest.fixture
def on_queue_server(queue_server):
    """A client of the queue server of its own, for looking at what is stored there."""
    client = Redis(host=queue_server.host, port=queue_server.port)
    yield client
    client.close()


def _enqueue_email(owner, capture) -> Job:
    with capture(execute=True):
        return services.email_enqueue(to=owner.email, subject="Hello", body="Hi", owner=owner)


def _rq_keys(client: Redis) -> list[bytes]:
    return list(client.scan_iter(match="rq:*"))


def test_a_queued_job_lands_on_the_queue_server_and_not_the_state_server(
    ada, on_queue_server, state_redis, django_capture_on_commit_callbacks
):
    job = _enqueue_email(ada, django_capture_on_commit_callbacks)

    assert on_queue_server.exists(RQJob.key_for(str(job.pk))) == 1
    assert on_queue_server.lrange("rq:queue:email", 0, -1) == [str(job.pk).encode()]
    assert _rq_keys(state_redis) == []
    # Its own pool, breaker and name in the command metrics, apart from the state role's.
    queue = get_redis("queue")
    assert queue.connection_pool is not getattr(state_redis, "connection_pool", None)  # None: a cluster's
    assert queue.connection_pool.connection_kwargs["client_name"] == "kestrel-queue"
    assert breaker("queue") is not breaker("state")
    assert reported_roles() == ["state", "cache", "queue"]


def test_a_worker_runs_it_and_its_status_is_read_from_the_queue_server(
    ada, as_ada, on_queue_server, run_jobs, django_capture_on_commit_callbacks
):
    job = _enqueue_email(ada, django_capture_on_commit_callbacks)
    # "queued" is RQ's word: read from the state server, the job would be "pending".
    assert as_ada.get(f"/api/jobs/{job.pk}").json()["status"] == "queued"

    run_jobs("email")

    [sent] = mail.outbox
    assert sent.subject == "Hello"
    assert RQJob.fetch(str(job.pk), connection=on_queue_server).get_status() == "finished"
    assert as_ada.get(f"/api/jobs/{job.pk}").json()["status"] == "finished"


def test_a_reports_progress_is_kept_on_the_queue_server(
    ada, on_queue_server, state_redis, run_jobs, django_capture_on_commit_callbacks
):
    Post.objects.create(author=ada, title="one", content="...")
    with django_capture_on_commit_callbacks(execute=True):
        job = report_enqueue(owner=ada)

    with django_capture_on_commit_callbacks(execute=True):
        run_jobs("reports")

    assert RQJob.fetch(str(job.pk), connection=on_queue_server).meta["progress"] == {"done": 1, "total": 1}
    assert not state_redis.exists(RQJob.key_for(str(job.pk)))


def test_the_outbox_drain_confirms_jobs_held_by_the_queue_server(
    ada, on_queue_server, django_capture_on_commit_callbacks
):
    job = _enqueue_email(ada, django_capture_on_commit_callbacks)
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=5))

    pushed = services.outbox_drain()

    assert pushed == 0  # held: not pushed a second time
    assert Job.objects.get(pk=job.pk).enqueued_at is not None
    assert on_queue_server.llen("rq:queue:email") == 1


def test_the_ops_dashboard_samples_and_metrics_count_the_queue_servers_jobs(
    ada, queue_server, django_capture_on_commit_callbacks
):
    _enqueue_email(ada, django_capture_on_commit_callbacks)

    dashboard = ops_dashboard_get()
    registry = build_registry()

    assert [figures.role for figures in dashboard.roles] == ["state", "cache", "queue"]
    assert dashboard.queue_error == ""
    assert dashboard.queues["email"].queued == 1
    assert dashboard.backlog == 1
    assert ops_sample()["queue_backlog"] == "1"
    assert jobs_status()["queues"]["email"]["queued"] == 1
    assert registry.get_sample_value("kestrel_rq_jobs", {"queue": "email", "state": "queued"}) == 1
    assert registry.get_sample_value("kestrel_redis_up", {"role": "queue"}) == 1


def test_django_rqs_admin_reads_the_queue_server(
    client, ada, make_user, queue_server, django_capture_on_commit_callbacks
):
    _enqueue_email(ada, django_capture_on_commit_callbacks)
    staff = make_user(is_staff=True)
    staff.is_superuser = True
    staff.save()
    client.force_login(staff)

    stats = client.get("/admin/rq/stats.json").json()

    [email] = [queue for queue in stats["queues"] if queue["name"] == "email"]
    assert email["jobs"] == 1
    assert email["connection_kwargs"]["port"] == queue_server.port


def test_healthz_probes_the_queue_server_and_reads_its_backlog(
    client, ada, queue_server, django_capture_on_commit_callbacks
):
    _enqueue_email(ada, django_capture_on_commit_callbacks)

    body = client.get("/healthz").json()

    assert set(body["checks"]) == {"redis_state", "redis_cache", "redis_queue", "database"}
    assert body["checks"]["redis_queue"]["ok"] is True
    assert body["jobs"]["backlog"] == 1


def test_a_queue_server_that_is_down_is_named_by_healthz_and_the_checks(client, queue_server):
    queue_server.stop()

    response = client.get("/healthz")
    messages = check_redis_roles()

    assert response.status_code == 503
    assert response.json()["failing"] == ["redis_queue"]
    assert response.json()["jobs"] == {"ok": False, "error": "the queue role is unavailable"}
    assert [(m.id, "queue role" in m.msg) for m in messages] == [("kestrel.E001", True)]


def test_the_audit_and_the_checks_hold_the_queue_server_to_noeviction(on_queue_server):
    report = run_audit()
    queue = {finding.rule: finding.level for finding in report.findings if finding.role == "queue"}
    assert queue["reachable"] == OK
    assert queue["eviction"] == OK
    assert queue["persistence"] == WARNING  # no AOF on a test server
    assert check_redis_roles() == []

    on_queue_server.config_set("maxmemory-policy", "allkeys-lru")

    evicting = [f for f in run_audit().findings if f.role == "queue" and f.rule == "eviction"]
    assert [f.level for f in evicting] == [ERROR]
    [warning] = check_redis_roles()
    assert warning.id == "kestrel.W001"
    assert warning.msg.startswith("The queue role's Redis")
    assert "allkeys-lru" in warning.msg


def test_unset_the_queue_role_keeps_everything_on_the_state_server(
    ada, client, state_redis, run_jobs, django_capture_on_commit_callbacks
):
    job = _enqueue_email(ada, django_capture_on_commit_callbacks)

    assert state_redis.exists(RQJob.key_for(str(job.pk))) == 1
    assert selectors.job_status(job=job)["status"] == "queued"
    dashboard = ops_dashboard_get()
    assert [figures.role for figures in dashboard.roles] == ["state", "cache"]
    assert dashboard.queues["email"].queued == 1
    assert set(client.get("/healthz").json()["checks"]) == {"redis_state", "redis_cache", "database"}

    run_jobs("email")

    assert len(mail.outbox) == 1
    assert RQJob.fetch(str(job.pk), connection=state_redis).get_status() == "finished"
