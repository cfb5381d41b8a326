"""The queue role's settings: by default the state role's database, pool and breaker; its
own server with REDIS_QUEUE_URL (and Sentinels with REDIS_QUEUE_SENTINELS); and the
check that refuses a Redis Cluster for the queues (kestrel.E002). Its behaviour on a
second server: tests/jobs/test_queue_server.py."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from django_rq import get_queue

from core.checks import check_queue_role, check_redis_roles
from core.redis import breaker, get_redis, reported_roles

ROOT = Path(__file__).resolve().parents[2]

# What the settings built for the queue role, and check_queue_role's answer, as JSON.
_READ_SETTINGS = """
import json
from django.conf import settings
from core.checks import check_queue_role
queues = settings.CACHES["queues"]
print(json.dumps({
    "url": queues["LOCATION"],
    "sentinels": queues["OPTIONS"].get("SENTINELS"),
    "is_state": queues is settings.CACHES["sessions"],
    "checks": [message.id for message in check_queue_role()],
}))
"""


def queue_settings(**env: str) -> dict:
    """The queue role's settings as a new process loads them from `env` (no REDIS_* inherited).

    `manage.py shell` runs no system check and connects to nothing: the hosts need not exist.
    """
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("REDIS_")}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", _READ_SETTINGS],
        cwd=ROOT,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


STATE_URL = "redis://127.0.0.1:6390/0"
QUEUE_URL = "redis://127.0.0.1:6391/0"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({"REDIS_URL": STATE_URL}, {"url": STATE_URL, "sentinels": None, "is_state": True}, id="single"),
        pytest.param(
            {"REDIS_URL": "redis://kestrel-state/0", "REDIS_SENTINELS": "127.0.0.1:26390"},
            {"url": "redis://kestrel-state/0", "sentinels": [["127.0.0.1", 26390]], "is_state": True},
            id="sentinel",
        ),
        pytest.param(
            {"REDIS_URL": STATE_URL, "REDIS_QUEUE_URL": QUEUE_URL},
            {"url": QUEUE_URL, "sentinels": None, "is_state": False},
            id="own-server",
        ),
        pytest.param(
            {
                "REDIS_URL": "redis://kestrel-state/0",
                "REDIS_SENTINELS": "127.0.0.1:26390",
                "REDIS_QUEUE_URL": QUEUE_URL,
            },
            {"url": QUEUE_URL, "sentinels": None, "is_state": False},
            id="own-plain-server-beside-sentinel",
        ),
        pytest.param(
            {
                "REDIS_URL": "redis://kestrel-state/0",
                "REDIS_SENTINELS": "127.0.0.1:26390",
                "REDIS_QUEUE_URL": "redis://kestrel-queue/0",
                "REDIS_QUEUE_SENTINELS": "127.0.0.1:26391",
            },
            {"url": "redis://kestrel-queue/0", "sentinels": [["127.0.0.1", 26391]], "is_state": False},
            id="own-sentinel-service",
        ),
    ],
)
def test_the_queue_role_defaults_to_the_state_roles_database_and_moves_with_its_url(env, expected):
    assert queue_settings(**env) == {**expected, "checks": []}


def test_a_cluster_redis_url_without_a_queue_url_loads_but_fails_the_check():
    cluster = "redis+cluster://:s3cret@127.0.0.1:7000"

    loaded = queue_settings(REDIS_URL=cluster)

    assert loaded["url"] == cluster  # settings load: the check, not an import error, says what is wrong
    assert loaded["checks"] == ["kestrel.E002"]
    assert queue_settings(REDIS_URL=cluster, REDIS_QUEUE_URL=QUEUE_URL)["checks"] == []


def test_the_queue_role_is_the_state_roles_pool_and_breaker_by_default():
    assert get_redis("queue").connection_pool is get_redis("state").connection_pool
    assert breaker("queue") is breaker("state")
    assert reported_roles() == ["state", "cache"]  # its database is reported once, as the state role
    for name in settings.RQ_QUEUES:
        assert settings.RQ_QUEUES[name]["USE_REDIS_CACHE"] == "queues"
        assert get_queue(name).connection.connection_pool is get_redis("queue").connection_pool


def _with_urls(state: str, queue: str | None = None) -> dict:
    """settings.CACHES with the state role at `state` and the queue role at `queue`
    (None: the state role's entry, as when REDIS_QUEUE_URL is unset)."""
    configured = copy.deepcopy(settings.CACHES)
    configured["sessions"]["LOCATION"] = state
    if queue is not None:
        configured["queues"] = {**configured["sessions"], "LOCATION": queue}
    return configured


def test_the_check_names_the_setting_when_redis_url_is_a_cluster():
    with override_settings(CACHES=_with_urls("redis+cluster://:s3cret@127.0.0.1:7000")):
        (message,) = check_queue_role()

    assert message.id == "kestrel.E002"
    assert message.msg.startswith("REDIS_URL is a Redis Cluster and REDIS_QUEUE_URL is not set")
    assert "single Redis primary" in message.msg
    assert "REDIS_QUEUE_URL" in message.hint
    assert "s3cret" not in message.msg


def test_the_check_refuses_a_cluster_queue_url_and_the_ping_check_skips_it(state_redis):
    cluster = "rediss+cluster://127.0.0.1:7000"
    with override_settings(CACHES=_with_urls(settings.CACHES["sessions"]["LOCATION"], cluster)):
        (message,) = check_queue_role()
        pinged = check_redis_roles()  # a single-server client cannot open a cluster URL: no crash

    assert message.id == "kestrel.E002"
    assert message.msg.startswith("REDIS_QUEUE_URL is a Redis Cluster")
    assert pinged == []


def test_a_single_queue_server_beside_a_cluster_state_role_passes():
    with override_settings(CACHES=_with_urls("redis+cluster://127.0.0.1:7000", "redis://127.0.0.1:6391/0")):
        assert check_queue_role() == []
