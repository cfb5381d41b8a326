"""after_commit: a side effect that fails after commit is logged, and the others still run."""

from __future__ import annotations

import logging
from functools import partial

import pytest
from django.db import transaction

from core.commit import after_commit

pytestmark = pytest.mark.django_db(transaction=True)


def _fails(what: str) -> None:
    raise RuntimeError(f"{what} could not reach Redis")


def test_a_failing_side_effect_is_logged_by_name_and_the_next_one_still_runs(caplog):
    ran = []

    with caplog.at_level(logging.ERROR, logger="django.db.backends.base"), transaction.atomic():
        after_commit(_fails, "the write-through")
        after_commit(ran.append, "the invalidation")

    assert ran == ["the invalidation"]
    assert "Error calling _fails in on_commit()" in caplog.text


def test_django_alone_cannot_log_a_failing_partial():
    # Why after_commit exists: Django names a failing robust callback by __qualname__.
    with pytest.raises(AttributeError, match="__qualname__"), transaction.atomic():
        transaction.on_commit(partial(_fails, "the write-through"), robust=True)


def test_outside_a_transaction_it_runs_at_once():
    ran = []

    after_commit(ran.append, "now")

    assert ran == ["now"]
