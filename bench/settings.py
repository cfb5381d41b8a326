"""Kestrel's settings plus the benchmark-only floor views (bench/urls.py).

Only gunicorn started by the harness loads this module (DJANGO_SETTINGS_MODULE), so
the floor endpoints never exist in the project's own URLconf.
"""

import os

from config.settings import *  # noqa: F403 - the real settings, unchanged but for the URLconf (and BENCH_UNBOUNDED_LIMITS)

ROOT_URLCONF = "bench.urls"

# The scenarios with the limiter on (bench.scenarios.LIMITER_ON, the site forms of
# bench/forms.py) measure it deciding, never refusing: every policy keeps its algorithm,
# scope and paths, with a limit no load here can reach (GCRA spaces requests 10 us apart).
if os.environ.get("BENCH_UNBOUNDED_LIMITS") == "1":
    KESTREL_RATE_LIMITS = {  # noqa: F405
        name: {**spec, "limit": spec["window"] * 100_000}
        for name, spec in KESTREL_RATE_LIMITS.items()  # noqa: F405
    }
