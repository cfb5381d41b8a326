"""manage.py redis_audit: the rules catch what they are for and the exit status says so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from accounts import keys as account_keys
from core.keys import key
from core.redis import reported_roles
from ops import audit
from ops.audit import ERROR, OK, WARNING, AuditOptions, run_audit
from tests.clients import role_servers

ROOT = Path(__file__).resolve().parents[2]


def findings(report, rule: str, role: str | None = None) -> list:
    return [f for f in report.findings if f.rule == rule and (role is None or f.role == role)]


def level(report, rule: str, role: str) -> str:
    """The level of the role's findings of `rule`: its server's, or each node's of a cluster role (alike here)."""
    (found,) = {finding.level for finding in findings(report, rule, role)}
    return found


@pytest.fixture
def server_config(role_config):
    """CONFIG SET on the state role's server (each node of a cluster) for one test, put back afterwards."""
    return lambda name, value: role_config("state", name, value)


@pytest.fixture(autouse=True)
def _empty_slowlog():
    # Earlier tests on a busy machine may have left slow commands in the servers' logs.
    for role in reported_roles():
        for server in role_servers(role):
            server.slowlog_reset()


# --- The test server as it is -----------------------------------------------------------


def test_the_test_server_breaks_no_rule_but_is_not_production_ready(single_server, cache_redis):
    cache_redis.set(key("posts", "post", 1), "{}", ex=60)

    report = run_audit()

    assert report.broken == []
    assert level(report, "cache_ttl", "cache") == OK
    assert level(report, "eviction", "state") == OK
    assert level(report, "layout", "both") == WARNING  # one server, two databases
    assert level(report, "eviction", "cache") == WARNING  # noeviction
    assert level(report, "persistence", "state") == WARNING  # no AOF
    assert {f.rule for f in run_audit(AuditOptions(strict=True)).broken} >= {"layout", "persistence"}


def test_the_command_exits_zero_when_no_rule_is_broken():
    out = StringIO()

    call_command("redis_audit", stdout=out)

    assert "No Redis rule broken." in out.getvalue()


def test_strict_turns_warnings_into_a_failure():
    with pytest.raises(CommandError, match="persistence") as failure:
        call_command("redis_audit", "--strict", stdout=StringIO())

    assert failure.value.returncode == 1


# --- Each rule catches its case ----------------------------------------------------------


def test_a_cache_key_without_a_ttl_breaks_the_audit(cache_redis):
    cache_redis.set(key("posts", "post", 7), "{}")  # forgot the TTL
    cache_redis.set(key("posts", "post", 8), "{}", ex=60)

    report = run_audit()

    (finding,) = findings(report, "cache_ttl")
    assert finding.level == ERROR
    assert finding.message.startswith("1 of 2 cache keys scanned")  # on a cluster: "scanned on 3 primaries"
    assert "have no TTL" in finding.message
    assert "by family: posts:post 1" in finding.details
    assert f"e.g. {key('posts', 'post', 7)}" in finding.details
    with pytest.raises(CommandError, match=r"cache_ttl \(cache\)"):
        call_command("redis_audit", stdout=StringIO())


def test_durable_state_keys_without_a_ttl_are_fine(state_redis):
    state_redis.xadd(key("feeds", "activity", 1), {"post": "1"})  # a stream: durable by design
    state_redis.incr(key("posts", "post_views", 1))

    assert run_audit().broken == []


def test_an_evicting_state_role_breaks_the_audit(server_config):
    server_config("maxmemory-policy", "allkeys-lru")

    report = run_audit()

    assert level(report, "eviction", "state") == ERROR
    assert "allkeys-lru" in findings(report, "eviction", "state")[0].message
    with pytest.raises(CommandError, match=r"eviction \(state") as failure:
        call_command("redis_audit", stdout=StringIO())
    assert failure.value.returncode == 1


def test_big_keys_are_found_by_memory_usage_on_a_sample(state_redis):
    big = key("core", "probe", "big")
    state_redis.set(big, "x" * 20_000)
    state_redis.set(key("core", "probe", "small"), "x")

    report = run_audit(AuditOptions(big_key_bytes=10_000))

    assert level(report, "big_keys", "state") == ERROR
    (detail,) = findings(report, "big_keys", "state")[0].details
    assert detail.startswith(f"{big}: ")
    assert level(report, "big_keys", "cache") == OK


def test_slow_commands_in_the_slowlog_are_reported(server_config, state_redis):
    server_config("slowlog-log-slower-than", "0")  # every command is "slow"
    state_redis.set(key("core", "probe", 1), "x", ex=60)

    report = run_audit()

    slow = [finding for finding in findings(report, "slowlog") if finding.level == WARNING]
    assert slow
    assert any("set" in detail.lower() for finding in slow for detail in finding.details)


def test_aof_on_the_state_role_passes_the_persistence_rule(server_config, state_redis):
    server_config("appendonly", "yes")
    server_config("appendfsync", "everysec")

    report = run_audit()

    assert level(report, "persistence", "state") == OK


def test_an_unreachable_redis_is_an_error(redis_down):
    report = run_audit()

    assert {(f.role, f.level) for f in findings(report, "reachable")} == {(role, ERROR) for role in reported_roles()}


# --- Output ------------------------------------------------------------------------------


def test_json_output_lists_every_finding():
    out = StringIO()

    call_command("redis_audit", "--json", stdout=out)

    report = json.loads(out.getvalue())
    assert report["ok"] is True
    assert {"reachable", "layout", "eviction", "persistence", "cache_ttl", "big_keys", "slowlog"} <= {
        finding["rule"] for finding in report["findings"]
    }


@pytest.mark.slow
def test_manage_py_exits_non_zero_for_cron_and_ci(cache_redis):
    cache_redis.set(key("posts", "post", 9), "{}")  # no TTL

    result = subprocess.run(
        [sys.executable, "manage.py", "redis_audit"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    assert "cache_ttl" in result.stderr


def test_the_audit_shows_no_session_or_token_id(server_config, state_redis, cache_redis, make_user, monkeypatch):
    monkeypatch.setattr(audit, "EXAMPLES", 100)  # every SLOWLOG entry, not the slowest five
    client = Client()
    client.force_login(make_user())
    session_id = client.cookies["sessionid"].value
    server_config("slowlog-log-slower-than", "0")  # every command is "slow"...
    for server in role_servers("state"):
        server.slowlog_reset()
    assert client.get("/").status_code == 200  # ...among them a real session read
    server_config("slowlog-log-slower-than", "10000000")
    # Big keys, and cache keys without a TTL, in credential-bearing families.
    jti, family = "4f1c9e2b7a6d4e0f8a3b", "9a2e6c1d0b7f4a5e8c3d"
    state_redis.set(account_keys.jwt_revoked(jti), "x" * 2_000, ex=60)
    cache_redis.set(account_keys.jwt_family_revoked(family), "{}")
    cache_redis.set(account_keys.session(session_id), "{}")
    text, as_json = StringIO(), StringIO()

    for out, extra in ((text, []), (as_json, ["--json"])):
        with pytest.raises(CommandError):  # the cache keys without a TTL break the audit
            call_command("redis_audit", "--big-key-bytes", "1000", "--slowlog", "100", *extra, stdout=out)

    for output in (text.getvalue(), as_json.getvalue()):
        assert "GET kestrel:accounts:session:<redacted>" in output  # the SLOWLOG entry
        assert "e.g. kestrel:accounts:session:<redacted>" in output  # the key without a TTL
        assert "kestrel:accounts:jwt:<redacted>:revoked: " in output  # the big key
        assert "e.g. kestrel:accounts:jwt_family:<redacted>:revoked" in output
        assert session_id not in output
        assert jti not in output
        assert family not in output
