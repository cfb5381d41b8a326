"""/metrics (staff or bearer token only, never cached) and the jobs part of /healthz.

Every family that dashboards and alerts read is served (names, labels and types).
"""

from __future__ import annotations

import pytest
from django.urls import include, path
from redis import Redis
from rq import Queue, Worker

from core import metrics
from core.keys import key
from core.redis import role_url
from ops.monitoring import build_registry, jobs_status, rq_snapshot
from tests.cluster_session import ClusterSession

# /metrics at the root, as config/urls.py includes ops.urls.
urlpatterns = [path("", include("ops.urls"))]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

TOKEN = "a-long-random-scrape-token"


def noop_job() -> None:
    return None


@pytest.fixture
def token(settings):
    settings.KESTREL_METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.fixture
def alive_worker():
    """A worker registered and heartbeating on the email queue, as `rqworker` does.

    On a connection of its own: RQ raises the socket timeout of the pool it is given.
    """
    connection = Redis.from_url(role_url("queue"))
    worker = Worker([Queue("email", connection=connection)], connection=connection)
    worker.register_birth()
    yield worker
    worker.register_death()
    connection.close()


# --- Who may read it -----------------------------------------------------------------


def test_anonymous_visitors_cannot_see_metrics(client):
    response = client.get("/metrics")

    assert response.status_code == 403
    assert response.json() == {"error": "Forbidden"}


def test_people_who_are_not_staff_cannot_see_metrics(client, make_user):
    client.force_login(make_user())

    assert client.get("/metrics").status_code == 403


def test_a_wrong_or_unconfigured_token_is_refused(client, settings):
    settings.KESTREL_METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 403

    settings.KESTREL_METRICS_TOKEN = TOKEN
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token").status_code == 403


def test_a_wrong_token_is_refused_even_with_a_staff_session(client, make_user, token):
    client.force_login(make_user(is_staff=True))

    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token").status_code == 403


def test_staff_see_metrics_in_prometheus_format_never_cached(client, make_user):
    client.force_login(make_user(is_staff=True))

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert "no-store" in response["Cache-Control"]
    assert b'kestrel_redis_up{role="state"} 1.0' in response.content


def test_prometheus_reads_them_with_the_bearer_token(client, token):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 200
    assert b"# TYPE kestrel_redis_commands_total counter" in response.content


def test_openmetrics_is_served_when_asked(client, token):
    response = client.get(
        "/metrics", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0"
    )

    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.endswith(b"# EOF\n")


# --- What is in it --------------------------------------------------------------------


def test_metrics_include_command_counts_cache_counters_and_redis_figures(client, token, cache_redis, redis_server):
    metrics.incr("cache.hit", family="post", tier="l1")
    metrics.incr("cache.hit", family="post", tier="l1")
    metrics.incr("cache.miss", family="post")
    cache_redis.set(key("core", "probe", 1), "x", ex=60)
    # The session's servers: noeviction, but a cluster session's cache role evicts.
    policies = {"state": "noeviction", "cache": "noeviction"}
    if isinstance(redis_server, ClusterSession):
        policies["cache"] = "allkeys-lru"

    body = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").content.decode()

    assert 'kestrel_cache_hit_total{family="post",tier="l1"} 2.0' in body
    assert 'kestrel_cache_miss_total{family="post"} 1.0' in body
    for role, policy in policies.items():
        assert f'kestrel_redis_up{{role="{role}"}} 1.0' in body
        assert f'kestrel_redis_maxmemory_policy_info{{policy="{policy}",role="{role}"}} 1.0' in body
        assert f'kestrel_redis_memory_used_bytes{{role="{role}"}}' in body
    assert 'kestrel_redis_keys{role="cache"} 1.0' in body
    assert "kestrel_redis_evicted_keys_total" in body
    assert 'kestrel_redis_commands_total{command="SET",family="core:probe",role="cache"}' in body
    assert 'kestrel_redis_command_duration_seconds_count{command="SET",family="core:probe",role="cache"}' in body


def test_metrics_keep_every_kestrel_family(client, token, cache_redis):
    """Dashboards and alerts read these names: each is served, from prometheus-client."""
    metrics.incr("cache.hit", family="post", tier="redis")
    metrics.incr("lock.contended", lock="job:report")
    pipe = cache_redis.pipeline(transaction=False)
    pipe.set(key("core", "probe", 1), "x", ex=60)
    pipe.lpush(key("core", "probe", 1), "y")  # WRONGTYPE: an error reply
    pipe.execute(raise_on_error=False)
    client.get("/healthz")

    body = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").content.decode()

    for family, kind in [
        ("kestrel_redis_commands", "counter"),
        ("kestrel_redis_command_errors", "counter"),
        ("kestrel_redis_command_duration_seconds", "histogram"),
        ("kestrel_redis_pipeline_commands", "histogram"),
        ("kestrel_cache_hit", "counter"),
        ("kestrel_lock_contended", "counter"),
        ("kestrel_http_requests", "counter"),
        ("kestrel_http_request_duration_seconds", "histogram"),
        ("kestrel_redis_up", "gauge"),
        ("kestrel_redis_evicted_keys", "counter"),
        ("kestrel_rq_jobs", "gauge"),
        ("kestrel_rq_workers", "gauge"),
        ("process_cpu_seconds", "counter"),
    ]:
        assert f"# TYPE {family}{'_total' if kind == 'counter' else ''} {kind}" in body, family
    assert 'kestrel_cache_hit_total{family="post",tier="redis"} 1.0' in body
    assert 'kestrel_http_requests_total{method="GET",route="healthz",status="2xx"}' in body
    assert "_created" not in body


def test_metrics_include_queue_depths_failed_jobs_and_workers(client, token, queue_redis, alive_worker):
    email = Queue("email", connection=queue_redis)
    email.enqueue(noop_job)
    email.enqueue(noop_job)
    queue_redis.zadd(email.failed_job_registry.key, {"a-failed-job": 9_999_999_999})

    body = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").content.decode()

    assert 'kestrel_rq_jobs{queue="email",state="queued"} 2.0' in body
    assert 'kestrel_rq_jobs{queue="email",state="failed"} 1.0' in body
    assert 'kestrel_rq_jobs{queue="reports",state="queued"} 0.0' in body
    assert "kestrel_rq_workers 1.0" in body
    assert 'kestrel_rq_queue_workers{queue="email"} 1.0' in body
    assert 'kestrel_rq_queue_workers{queue="reports"} 0.0' in body
    assert 'kestrel_rq_oldest_job_age_seconds{queue="email"}' in body


@pytest.mark.slow
def test_metrics_still_answer_while_redis_is_down(client, token, redis_down):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 200
    assert b'kestrel_redis_up{role="state"} 0.0' in response.content
    assert b'kestrel_redis_up{role="cache"} 0.0' in response.content
    assert b"kestrel_rq_jobs" not in response.content  # no figures rather than wrong ones


def test_each_scrape_reads_redis_afresh(queue_redis):
    registry = build_registry()
    Queue("default", connection=queue_redis).enqueue(noop_job)

    assert registry.get_sample_value("kestrel_rq_jobs", {"queue": "default", "state": "queued"}) == 1


# --- Jobs in /healthz -----------------------------------------------------------------


def test_jobs_status_reports_workers_alive_and_the_backlog(queue_redis, alive_worker):
    Queue("email", connection=queue_redis).enqueue(noop_job)

    status = jobs_status()

    assert status["ok"] is True
    assert status["workers"] == 1
    assert status["backlog"] == 1
    assert status["queues"]["email"]["queued"] == 1
    assert status["queues"]["email"]["workers"] == 1
    assert status["queues"]["email"]["oldest_seconds"] >= 0


def test_jobs_status_is_not_ok_without_a_live_worker(queue_redis):
    status = jobs_status()

    assert status["ok"] is False
    assert status["workers"] == 0
    assert status["problems"] == ["no RQ worker is alive"]


def test_a_worker_that_stopped_heartbeating_is_not_alive(queue_redis, alive_worker):
    queue_redis.delete(alive_worker.key)  # what its key's TTL does when heartbeats stop

    snapshot = rq_snapshot()

    assert snapshot.workers == 0
    assert snapshot.registered_workers == 1


def test_jobs_status_flags_a_backlog_over_the_limit(settings, queue_redis, alive_worker):
    settings.KESTREL_HEALTH_MAX_BACKLOG = 2
    email = Queue("email", connection=queue_redis)
    for _ in range(3):
        email.enqueue(noop_job)

    status = jobs_status()

    assert status["ok"] is False
    assert status["problems"] == ["3 jobs queued (more than 2)"]


@pytest.mark.slow
def test_jobs_status_says_so_when_the_state_role_is_down(redis_down):
    status = jobs_status()

    assert status["ok"] is False
    assert "ConnectionError" in status["error"]
