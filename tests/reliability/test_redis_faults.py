"""Redis faults under traffic: the state role killed and restarted, each role hung.

People use a live Kestrel (sessions and bearer tokens, posting, liking, following,
logging out, revoking tokens) while a Redis server is SIGKILLed and started again on
its port, or SIGSTOPped for ten seconds. What must hold, endpoint by endpoint:
503 with {"error"} while the state role is away (never a 500, never a hang past the
bound the settings give), the cache role failing open, every endpoint answering again
within seconds, and every write the clients saw acknowledged still there afterwards,
with logged-out sessions and revoked tokens still refused.
"""

from __future__ import annotations

import redis

from tests.live import live_kestrel
from tests.reliability.traffic import (
    CPU_MARGIN,
    RECOVERY_BOUND,
    TRAFFIC_ENV,
    Client,
    Member,
    Recorder,
    RoleTimeouts,
    Traffic,
    check_ledger,
    create_members,
    fault_problems,
    run_fault,
    scenario_report,
    wait_until,
)

MEMBERS = 6  # three by session, three by bearer token
BUDGET = 30_000  # requests per scenario at most; each also stops by itself when its faults are over
HANG_SECONDS = 10.0
KILL_SECONDS = 3.0

# Production persistence for the state role (README, "Running it in production").
AOF = {"appendonly": "yes", "appendfsync": "everysec"}

# The state-role calls a request makes before it gives up: the session read (rate
# limiter), the limiter's script, the session read again (DRF's authentication), and
# one of the view's own.
STATE_CALLS_PER_REQUEST = 4

# The state role is on every authenticated request's path (the session, the token's
# denylist), so while it is away both kinds of client must have met it.
BOTH_KINDS = ("(session)", "(bearer)")


def _settings(*roles: RoleTimeouts) -> dict[str, str]:
    return {
        f"{r.role} role": f"connect {r.connect:g} s, socket {r.socket:g} s, {r.retries} retries on refused connections"
        for r in roles
    } | TRAFFIC_ENV


def _job_round_trip(site, member: Member) -> float:
    """Seconds until an email job queued now has run: the worker is back on the state role."""
    client = Client(site.port, Recorder(), address="10.254.0.1")
    try:
        answer = client.call(
            "POST",
            "/api/login",
            endpoint="check POST /api/login",
            body={"email": member.email, "password": member.password},
        )
        assert answer.status == 200, answer
        answer = client.call(
            "POST",
            "/api/send-email",
            endpoint="check POST /api/send-email",
            ok=(202,),
            body={"email": member.email, "subject": "after the restart"},
        )
        assert answer.status == 202, answer
        job_id = answer.data["jobId"]
        began = client.recorder.now()

        def finished() -> bool:
            status = client.call("GET", f"/api/jobs/{job_id}", endpoint="check GET /api/jobs/{id}")
            return isinstance(status.data, dict) and status.data.get("status") == "finished"

        assert wait_until(finished, timeout=30, interval=0.2), f"job {job_id} did not finish:\n{site.logs()}"
        return client.recorder.now() - began
    finally:
        client.close()


def test_killing_the_state_redis_during_writes_loses_nothing_acknowledged():
    state = RoleTimeouts.of("state")
    with live_kestrel(env=TRAFFIC_ENV, state_config=AOF) as site:
        *members, spare = create_members(site, MEMBERS + 1, prefix="kill")
        traffic = Traffic(site, members, budget=BUDGET, seed=11)
        with traffic:
            fault = run_fault(
                traffic,
                inject=lambda: site.state.stop(kill=True),
                heal=site.state.start,
                hold=KILL_SECONDS,
            )
        client = redis.Redis(port=site.state.port)
        try:
            persistence = client.info("persistence")
        finally:
            client.close()
        check = check_ledger(site, traffic.ledger, traffic.recorder)
        worker_back = _job_round_trip(site, spare)
        fault_cost = STATE_CALLS_PER_REQUEST * state.refused_call
        result = scenario_report(
            "redis-state-killed",
            title=f"Redis state role SIGKILLed for {KILL_SECONDS:g} s under traffic, restarted on its port (AOF)",
            traffic=traffic,
            fault=fault,
            bounds={
                "fault cost s (4 state calls x retries' backoff)": round(fault_cost, 3),
                "cpu margin s": CPU_MARGIN,
                "recovery s": RECOVERY_BOUND,
            },
            settings=_settings(state) | {"state persistence": "appendonly yes, appendfsync everysec"},
            ledger_check=check,
            site=site,
            extra={
                "aof_enabled_after_restart": persistence["aof_enabled"],
                "email_job_after_restart_s": round(worker_back, 2),
            },
        )

    problems = fault_problems(result, traffic, fault_cost=fault_cost, must_fail=BOTH_KINDS)
    if not check.ok:
        problems.append(f"ledger: {check.problems}")
    if persistence["aof_enabled"] != 1:
        problems.append("the restarted state server is not running with appendonly")
    assert not problems, "\n".join(problems) + f"\n(report: {result.path})"


def test_a_hung_state_redis_answers_503_within_one_timeout():
    state = RoleTimeouts.of("state")
    with live_kestrel(env=TRAFFIC_ENV) as site:
        members = create_members(site, MEMBERS, prefix="stophang")
        traffic = Traffic(site, members, budget=BUDGET, seed=12)
        with traffic:
            fault = run_fault(traffic, inject=site.state.pause, heal=site.state.resume, hold=HANG_SECONDS)
        check = check_ledger(site, traffic.ledger, traffic.recorder)
        result = scenario_report(
            "redis-state-hung",
            title=f"Redis state role hung (SIGSTOP) for {HANG_SECONDS:g} s under traffic",
            traffic=traffic,
            fault=fault,
            bounds={
                "fault cost s (one hung call: connect + socket timeout)": state.hung_call,
                "cpu margin s": CPU_MARGIN,
            },
            settings=_settings(state),
            ledger_check=check,
            site=site,
        )

    problems = fault_problems(result, traffic, fault_cost=state.hung_call, must_fail=BOTH_KINDS)
    if not check.ok:
        problems.append(f"ledger: {check.problems}")
    assert not problems, "\n".join(problems) + f"\n(report: {result.path})"


def test_a_hung_cache_redis_fails_open_within_its_timeout():
    cache = RoleTimeouts.of("cache")
    with live_kestrel(env=TRAFFIC_ENV) as site:
        members = create_members(site, MEMBERS, prefix="cachehang")
        traffic = Traffic(site, members, budget=BUDGET, seed=13)
        with traffic:
            fault = run_fault(traffic, inject=site.cache.pause, heal=site.cache.resume, hold=HANG_SECONDS)
        check = check_ledger(site, traffic.ledger, traffic.recorder)
        result = scenario_report(
            "redis-cache-hung",
            title=f"Redis cache role hung (SIGSTOP) for {HANG_SECONDS:g} s under traffic",
            traffic=traffic,
            fault=fault,
            bounds={
                "fault cost s (one hung call: connect + socket timeout)": cache.hung_call,
                "cpu margin s": CPU_MARGIN,
            },
            settings=_settings(cache),
            ledger_check=check,
            site=site,
        )

    api = [f.endpoint for f in result.figures if "/api/" in f.endpoint]
    # The cache fails open: every API request answers as if nothing happened; only the
    # health check says the cache is down.
    problems = fault_problems(
        result, traffic, fault_cost=cache.hung_call, must_fail=["GET /healthz"], must_not_fail=api
    )
    if not check.ok:
        problems.append(f"ledger: {check.problems}")
    assert not problems, "\n".join(problems) + f"\n(report: {result.path})"
