"""Kestrel's benchmarks: `make bench` (or `python -m bench --help`).

They print figures, they are not timed tests: each run starts its own Redis server,
SQLite database and gunicorn (one per settings a scenario asks for) on 127.0.0.1,
loads them, and compares every path with a floor measured in the same run
(docs/design.md, "Reference figures": compare ratios, not req/s, since the load generator
shares the cores). The benchmarks without HTTP run in child processes on the same
Redis and database, each printing JSON: the stampede (bench/stampede.py), RQ workers
(bench/jobqueue.py), the fan-out (bench/fanout.py), the rate limiter alone
(bench/limiter.py) and locks (bench/locks.py). Live-notification latency
(bench/sse.py) reads SSE streams from the harness while bench/notifier.py publishes.
"""
