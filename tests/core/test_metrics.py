"""core.metrics: incr counts into prometheus-client counters of the default registry.

Counts are summed in memory until a flush; value, snapshot and reset go through the counters.
"""

from __future__ import annotations

import logging

from prometheus_client import REGISTRY

from core import metrics


def exposed(name: str, labels: dict[str, str] | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, labels or {})


def test_a_count_is_a_prometheus_counter_in_the_default_registry():
    metrics.incr("test.probe", kind="a")
    metrics.incr("test.probe", 2, kind="a")
    metrics.flush()

    assert exposed("kestrel_test_probe_total", {"kind": "a"}) == 3
    assert metrics.sample_value("kestrel_test_probe_total", {"kind": "a"}) == 3


def test_counts_are_summed_in_memory_until_a_flush():
    metrics.incr("test.buffered")
    metrics.flush()  # the next flush is due a second from now
    before = exposed("kestrel_test_buffered_total")

    for _ in range(3):
        metrics.incr("test.buffered")
    assert exposed("kestrel_test_buffered_total") == before

    metrics.flush()
    assert exposed("kestrel_test_buffered_total") == before + 3


def test_value_reads_one_series_or_the_sum_of_them_all():
    metrics.incr("test.lost", kind="like")
    metrics.incr("test.lost", 4, kind="follow")

    assert metrics.value("test.lost", kind="like") == 1
    assert metrics.value("test.lost", kind="follow") == 4
    assert metrics.value("test.lost") == 5
    assert metrics.value("test.lost", kind="post") == 0
    assert metrics.value("test.lost", other="x") == 0
    assert metrics.value("test.never_counted") == 0


def test_snapshot_lists_the_series_counted_by_their_names():
    metrics.incr("test.snap", family="post", tier="l1")
    metrics.incr("test.snap_plain", 7)

    snapshot = metrics.snapshot()

    assert snapshot["test.snap"] == [({"family": "post", "tier": "l1"}, 1)]
    assert snapshot["test.snap_plain"] == [({}, 7)]


def test_reset_empties_every_counter():
    metrics.incr("test.reset", kind="a")
    metrics.incr("test.reset_plain")

    metrics.reset()

    assert metrics.value("test.reset") == 0
    assert metrics.value("test.reset_plain") == 0
    assert exposed("kestrel_test_reset_total", {"kind": "a"}) is None
    assert "test.reset" not in metrics.snapshot()


def test_a_count_that_cannot_be_exported_is_dropped_not_raised(caplog):
    metrics.incr("test.labels", kind="a")
    with caplog.at_level(logging.ERROR, logger="core.metrics"):
        metrics.incr("test.labels", other="b")  # label names are fixed by the first count
        metrics.incr("redis.commands")  # a family core.instrumentation owns
        metrics.incr("Not A Name")
        metrics.flush()

    assert metrics.value("test.labels", kind="a") == 1
    assert len([r for r in caplog.records if "cannot be exported" in r.getMessage()]) == 3


def test_a_missing_label_is_exported_empty():
    metrics.incr("test.partial", kind="a", tier="l1")
    metrics.incr("test.partial", kind="b")

    assert metrics.value("test.partial", kind="b") == 1
    assert exposed("kestrel_test_partial_total", {"kind": "b", "tier": ""}) == 1
