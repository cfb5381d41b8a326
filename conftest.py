"""Test session set-up: a private Redis server first, then Django settings.

Settings read REDIS_URL when they load, so the server must exist before Django is
configured; pytest-django finishes the set-up in its own (later) pytest_configure.
The tests never touch a Redis server they did not start.
"""

from __future__ import annotations

import os
import secrets
import tempfile

import pytest

from devstack.redis_server import RedisServer

_server: RedisServer | None = None


@pytest.fixture(scope="session")
def redis_server() -> RedisServer:
    """The session's private Redis server (started in pytest_configure), for tests/ and bench/tests/."""
    assert _server is not None, "the private Redis server starts in pytest_configure"
    return _server


def pytest_configure(config: pytest.Config) -> None:
    global _server
    if config.getoption("help") or config.getoption("version"):
        return
    _server = RedisServer(extra_config={"maxmemory-policy": "noeviction"}).start()
    var_dir = tempfile.mkdtemp(prefix="kestrel-test-var-")
    os.makedirs(os.path.join(var_dir, "static"))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "REDIS_URL": f"{_server.url}/0",
            "REDIS_CACHE_URL": f"{_server.url}/1",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "SECURE_SSL_REDIRECT": "0",
            "KESTREL_VAR_DIR": var_dir,
            "EMAIL_BACKEND": "django.core.mail.backends.locmem.EmailBackend",
        }
    )
    from django.conf import settings

    if not settings.CACHES["sessions"]["LOCATION"].startswith(_server.url):
        pytest.exit("Django settings were loaded before the private Redis started (is DJANGO_SETTINGS_MODULE set?)")
    # No thread sending views in the background (posts.counters): tests send them with
    # flush_views(). A setting, not the environment, which live stacks would inherit.
    settings.KESTREL_VIEW_FLUSH_INTERVAL = 0
    # Fast hashing: the suite creates many users; the hasher is not under test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # No collectstatic in tests: plain static storage instead of the manifest.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        from core.cacheaside import l1

        l1().stop()  # before the server goes, or its subscriber logs the lost connection
        _server.cleanup()
