"""Fixtures shared by the feeds tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def after_commit(django_capture_on_commit_callbacks):
    """`with after_commit():` runs the block's on-commit side effects (fan-out, activity) at its end."""
    return lambda: django_capture_on_commit_callbacks(execute=True)
