"""PostgreSQL stopped and started again under traffic.

A private cluster (tests/reliability/postgres.py) behind a live Kestrel with persistent
connections (DB_CONN_MAX_AGE) and health checks (settings: CONN_HEALTH_CHECKS), stopped
as `pg_ctl stop -m fast` and `-m immediate` would while people post, like and follow.
Requests during the outage must get a quick 503 {"error"}, not a 500 or a hang; once
the server is back, every process must recover by itself (no connection that died with
the old server may be reused), and every acknowledged write must be in the database.
"""

from __future__ import annotations

import pytest

from tests.live import live_kestrel
from tests.reliability.postgres import PostgresServer, find_pg_bin
from tests.reliability.traffic import (
    CPU_MARGIN,
    TRAFFIC_ENV,
    Traffic,
    check_ledger,
    create_members,
    fault_problems,
    run_fault,
    scenario_report,
)

MEMBERS = 6
BUDGET = 30_000
DOWN_SECONDS = 4.0
# A stopped server refuses connections at once; Django's health check finds a dead
# persistent connection with one round trip. Nothing here waits on a timeout.
FAULT_COST = 0.0


@pytest.fixture(scope="module")
def stack():
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (set PG_BIN to the folder holding initdb and postgres)")
    with PostgresServer(bin_dir) as postgres:
        postgres.create_database()
        with live_kestrel(database_url=postgres.url, env=TRAFFIC_ENV) as site:
            yield postgres, site


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_stopped_mid_traffic_answers_503_and_recovers_by_itself(stack, mode):
    postgres, site = stack
    members = create_members(site, MEMBERS, prefix=f"pg{mode}")
    traffic = Traffic(site, members, budget=BUDGET, seed=31 if mode == "fast" else 32)
    with traffic:
        fault = run_fault(traffic, inject=lambda: postgres.stop(mode), heal=postgres.start, hold=DOWN_SECONDS)
    check = check_ledger(site, traffic.ledger, traffic.recorder)
    result = scenario_report(
        f"postgres-stopped-{mode}",
        title=f"PostgreSQL stopped ({mode}: pg_ctl stop -m {mode}) for {DOWN_SECONDS:g} s under traffic, then started",
        traffic=traffic,
        fault=fault,
        bounds={"fault cost s": FAULT_COST, "cpu margin s": CPU_MARGIN},
        settings={
            "database": f"PostgreSQL {bin_dir_version(postgres)} on 127.0.0.1:{postgres.port}",
            "DB_CONN_MAX_AGE": "60 (default)",
            "CONN_HEALTH_CHECKS": "on (config/settings.py)",
        }
        | TRAFFIC_ENV,
        ledger_check=check,
        site=site,
    )

    problems = fault_problems(result, traffic, fault_cost=FAULT_COST, must_fail=("(session)", "(bearer)"))
    if not check.ok:
        problems.append(f"ledger: {check.problems}")
    assert not problems, "\n".join(problems) + f"\n(report: {result.path})"


def bin_dir_version(postgres: PostgresServer) -> str:
    return postgres.bin_dir.parent.name
