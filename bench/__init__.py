"""Kestrel's benchmarks: `make bench` (or `python -m bench --help`).

They print figures, they are not timed tests: each run starts its own Redis server,
SQLite database and gunicorn (one per settings a scenario asks for) on 127.0.0.1,
loads them, and compares every path with a floor measured in the same run
(DESIGN.md, "Performance facts": compare ratios, not req/s, since the load generator
shares the cores). The stampede benchmark (bench/stampede.py) runs without HTTP, in a
child process on the same Redis and database.
"""
