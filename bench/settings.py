"""Kestrel's settings plus the benchmark-only floor views (bench/urls.py).

Only gunicorn started by the harness loads this module (DJANGO_SETTINGS_MODULE), so
the floor endpoints never exist in the project's own URLconf.
"""

from config.settings import *  # noqa: F403 - the real settings, unchanged but for the URLconf

ROOT_URLCONF = "bench.urls"
