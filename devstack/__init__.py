"""Kestrel's development stack: the processes around the apps, not an app itself.

Not in INSTALLED_APPS and free of Django imports. `make run` (devstack.run), `make
security` (devstack.deploycheck), the test session (conftest.py, tests/live.py) and
the benchmarks (bench/) start their private Redis servers (devstack.redis_server) and
Kestrel's own processes (devstack.processes, devstack.web) with it.
"""
