"""The development SECRET_KEY is drawn per checkout into var/, never written in the source."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from config.secret_key import development_secret_key

BASE_DIR = Path(__file__).resolve().parents[2]
PRINT_KEY = "from django.conf import settings; print(settings.SECRET_KEY)"


def start_debug(var_dir: Path, **extra: str) -> subprocess.Popen:
    """`manage.py shell` as `make run` starts it: DEBUG on, no SECRET_KEY, this var folder."""
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE"}}
    env |= {"DEBUG": "1", "KESTREL_VAR_DIR": str(var_dir), **extra}
    return subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", PRINT_KEY],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_checkouts_get_different_development_keys(tmp_path):
    first = development_secret_key(tmp_path / "one")
    second = development_secret_key(tmp_path / "two")

    assert first != second
    assert len(first) >= 50
    assert len(second) >= 50


def test_the_same_checkout_keeps_its_key_across_restarts(tmp_path):
    first = development_secret_key(tmp_path)

    assert development_secret_key(tmp_path) == first
    assert (tmp_path / "secret_key").read_text().strip() == first


def test_the_key_file_is_readable_by_its_owner_only(tmp_path):
    development_secret_key(tmp_path)

    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no draft left behind


def test_processes_starting_together_agree_on_one_key(tmp_path):
    processes = [start_debug(tmp_path) for _ in range(4)]
    outputs = [process.communicate(timeout=60) for process in processes]

    keys = {stdout.strip() for stdout, _ in outputs}
    assert all(process.returncode == 0 for process in processes), [stderr for _, stderr in outputs]
    assert keys == {(tmp_path / "secret_key").read_text().strip()}


@pytest.mark.parametrize("debug", ["0", "1"])
def test_the_once_public_development_key_is_refused(tmp_path, debug):
    process = start_debug(tmp_path, DEBUG=debug, SECRET_KEY="django-insecure-kestrel-development-only")
    _, stderr = process.communicate(timeout=60)

    assert process.returncode != 0
    assert "SECRET_KEY must be set" in stderr


def test_no_secret_key_is_written_in_the_settings():
    source = (BASE_DIR / "config" / "settings.py").read_text()

    assert "django-insecure-kestrel" not in source
    assert "_DEV_SECRET_KEY" not in source
