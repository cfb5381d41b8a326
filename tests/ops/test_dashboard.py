"""/ops: the staff dashboard and its samples in a capped stream (its charts: test_charts.py)."""

from __future__ import annotations

import jwt
import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from core.keys import key
from core.redis import get_redis
from ops import dashboard
from ops.keys import ops_samples_key
from tests.clients import role_servers

pytestmark = pytest.mark.django_db

SECTIONS = ("roles", "charts", "slowlog", "latency", "queues", "commands", "cache", "audit")


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user(is_staff=True))
    return client


@pytest.fixture
def slowlog_everything(role_config):
    """Log every command in the state role's SLOWLOG (each node's on a cluster), and restore the threshold after."""
    role_config("state", "slowlog-log-slower-than", "0")
    for server in role_servers("state"):
        server.slowlog_reset()
    return get_redis("state")


# --- Who may see it ------------------------------------------------------------------


def test_staff_see_every_section_of_the_dashboard(staff_client):
    response = staff_client.get(reverse("ops"))

    assert response.status_code == 200
    html = response.content.decode()
    for section in SECTIONS:
        assert f'id="{section}"' in html
    assert "maxmemory-policy" in html
    assert "<svg" in html
    assert response["Cache-Control"].startswith("max-age=0")


def test_staff_get_an_ops_link_in_the_navigation(staff_client):
    assert f'href="{reverse("ops")}"' in staff_client.get(reverse("ops")).content.decode()


def test_people_who_are_not_staff_get_the_403_page(client, make_user):
    client.force_login(make_user())

    response = client.get(reverse("ops"))

    assert response.status_code == 403
    assert b"This page is for staff" in response.content


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(reverse("ops"))

    assert response.status_code == 302
    assert "login" in response["Location"]


# --- Samples -------------------------------------------------------------------------


def test_a_sample_is_appended_to_the_stream_on_the_state_role(state_redis, cache_redis):
    stream = key("core", "ops", facet="samples")

    first = dashboard.ops_sample()
    second = dashboard.ops_sample()

    assert ops_samples_key() == stream
    assert state_redis.xlen(stream) == 2
    assert not cache_redis.exists(stream)
    assert state_redis.ttl(stream) == -1  # capped by MAXLEN, not expired (see ops_samples_key)
    for role in ("state", "cache"):
        for name in ("used_memory", "hit_ratio", "ops_per_sec", "evicted", "clients"):
            assert f"{role}_{name}" in second
    for name in ("kestrel_commands", "kestrel_avg_ms", "kestrel_errors", "queue_backlog"):
        assert name in second
    # The second one's interval is the commands sent since the first one.
    assert 0 < float(second["kestrel_commands"]) <= float(second["kestrel_commands_total"])
    assert float(first["kestrel_commands"]) == 0


def test_the_sample_stream_is_capped_at_a_day_of_samples(state_redis):
    stream = ops_samples_key()
    pipe = state_redis.pipeline(transaction=False)
    for n in range(dashboard.SAMPLES_MAXLEN + 600):
        pipe.xadd(stream, {"queue_backlog": n})
    pipe.execute()

    dashboard.ops_sample()

    assert dashboard.SAMPLES_MAXLEN == 1440
    # MAXLEN ~ trims whole stream nodes (up to stream-node-max-entries, 100, each).
    node = int(state_redis.config_get("stream-node-max-entries")["stream-node-max-entries"])
    assert dashboard.SAMPLES_MAXLEN <= state_redis.xlen(stream) <= dashboard.SAMPLES_MAXLEN + node


def test_the_job_samples_and_the_charts_read_the_samples(state_redis):
    from jobs.cron import PERIODIC_JOBS
    from ops.jobs import sample_ops

    sample_ops()
    sample_ops()

    assert (sample_ops, 60) in PERIODIC_JOBS
    series = dashboard.ops_series()
    assert len(series["state_used_memory"]) == 2
    assert series["state_used_memory"][0][0] <= series["state_used_memory"][1][0]


# --- SLOWLOG -------------------------------------------------------------------------


def test_slowlog_entries_show_the_key_family_of_their_key(staff_client, slowlog_everything):
    slowlog_everything.set(key("posts", "post", 42), "x")

    figures = dashboard.role_figures("state", slowlog_everything)
    response = staff_client.get(reverse("ops"))

    entries = [entry for entry in figures.slowlog if entry["command"] == "SET"]
    assert entries
    assert entries[0]["family"] == "posts:post"
    html = response.content.decode()
    assert '<td class="family">posts:post</td>' in html


def credentials_in_view(text: str) -> list[str]:
    """Every credential-bearing key in `text` whose id is not redacted (HTML-escaped or not)."""
    families = ("accounts:session:", "accounts:jwt:", "accounts:jwt_family:", "core:ratelimit:")
    return [
        text[at : at + 80]
        for family in families
        for at in (i for i in range(len(text)) if text.startswith(family, i))
        if not text.startswith(("&lt;redacted&gt;", "<redacted>"), at + len(family))
    ]


def test_the_slowlog_shows_no_session_id(staff_client, make_user, slowlog_everything):
    # Someone else's session, read by a real request: its key's id is their session cookie.
    client = Client()
    client.force_login(make_user())
    assert client.get("/").status_code == 200
    session_id = client.cookies["sessionid"].value

    html = staff_client.get(reverse("ops")).content.decode()
    metrics = staff_client.get(reverse("metrics")).content.decode()

    assert "accounts:session:&lt;redacted&gt;" in html  # the reads are listed, their ids are not
    assert session_id not in html
    assert staff_client.cookies["sessionid"].value not in html
    assert credentials_in_view(html) == []
    assert session_id not in metrics


def test_the_slowlog_shows_no_token_id(staff_client, make_user, slowlog_everything):
    make_user(email="tok@example.com", password="a-Strong-pass-42")
    api = APIClient()
    pair = api.post("/api/token", {"email": "tok@example.com", "password": "a-Strong-pass-42"}, format="json").json()
    assert api.post("/api/token/refresh", {"refresh": pair["refresh"]}, format="json").status_code == 200
    claims = jwt.decode(pair["refresh"], options={"verify_signature": False})

    html = staff_client.get(reverse("ops")).content.decode()

    assert "accounts:jwt:&lt;redacted&gt;:revoked" in html  # the rotation's denylist entry
    assert claims["jti"] not in html
    assert claims["fam"] not in html
    assert credentials_in_view(html) == []
