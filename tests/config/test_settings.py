"""Settings read the environment in one place and fail loudly on bad values."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int

BASE_DIR = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE", "SECURE_SSL_REDIRECT"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("secret", [None, "", "django-insecure-kestrel-development-only", "django-insecure-abc"])
def test_debug_off_refuses_to_start_without_a_real_secret_key(secret):
    env = {"DEBUG": "0"} if secret is None else {"DEBUG": "0", "SECRET_KEY": secret}

    result = manage("check", **env)

    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_check_deploy_is_clean_with_production_settings():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="kestrel.example.com",
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_a_malformed_value_names_its_variable(monkeypatch):
    monkeypatch.setenv("REDIS_MAX_CONNECTIONS", "lots")
    with pytest.raises(ImproperlyConfigured, match="REDIS_MAX_CONNECTIONS='lots' is not an integer"):
        env_int("REDIS_MAX_CONNECTIONS", 50)

    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DEBUG='maybe' is not a boolean"):
        env_bool("DEBUG", False)


def test_defaults_apply_when_a_variable_is_unset(monkeypatch):
    monkeypatch.delenv("REDIS_MAX_CONNECTIONS", raising=False)

    assert env_int("REDIS_MAX_CONNECTIONS", 50) == 50


def test_a_malformed_sentinel_address_stops_start_up():
    result = manage("check", DEBUG="1", REDIS_SENTINELS="10.0.0.5:26379,sentinel-b:lots")

    assert result.returncode != 0
    assert "REDIS_SENTINELS: 'sentinel-b:lots' is not host:port" in result.stderr
