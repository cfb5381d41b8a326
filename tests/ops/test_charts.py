"""/ops charts: units, y-axis low and high, the time axis, grouping by role, and the
note shown when both roles are one Redis server."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings
from django.urls import reverse
from django_redis.pool import ConnectionFactory
from redis import Redis

from core.redis import get_redis
from devstack.processes import free_port
from devstack.redis_server import RedisServer
from ops import charts, dashboard
from ops.charts import BYTES, PERCENT, Chart, axis_range, chart_svg, format_value

NOW = 1_700_000_000.0
MEMORY = Chart("cache_used_memory", "Memory used", BYTES, zero=False)
RATIO = Chart("cache_hit_ratio", "Hit ratio", PERCENT)
EVICTIONS = Chart("cache_evicted", "Keys evicted", "/min")
LATENCY = Chart("kestrel_avg_ms", "Average command latency", "ms")


def parsed(svg: object) -> ET.Element:
    return ET.fromstring(str(svg))  # noqa: S314 - the markup chart_svg just wrote, not outside input


def drawn(chart: Chart, values: list[float], *, every: float = 60, now: float = NOW) -> ET.Element:
    """The chart's <svg> of `values` sampled `every` seconds, the last one at `now`."""
    points = [(now - every * (len(values) - 1 - n), value) for n, value in enumerate(values)]
    return parsed(chart_svg(chart, points, now=now, label="a chart"))


def text_of(svg: ET.Element, css_class: str) -> str:
    found = [el.text for el in svg.iter("text") if css_class in el.get("class", "").split()]
    assert len(found) == 1, f"{css_class}: {found}"
    return found[0] or ""


def line_points(svg: ET.Element) -> list[tuple[float, float]]:
    return [
        (float(x), float(y))
        for polyline in svg.iter("polyline")
        for x, y in (pair.split(",") for pair in polyline.get("points", "").split())
    ]


# --- Units ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (12_345_678, BYTES, "12.3 MB"),
        (1_000_000, BYTES, "1 MB"),
        (950, BYTES, "950 B"),
        (2_500_000_000, BYTES, "2.5 GB"),
        (97, PERCENT, "97 %"),
        (99.95, PERCENT, "99.95 %"),  # not rounded up to a perfect 100 %
        (0.8, "ms", "0.8 ms"),
        (0.04213, "ms", "0.0421 ms"),
        (35, "ops/s", "35 ops/s"),
        (12_345, "/min", "12.3k/min"),
        (3_400_000, "/min", "3.4M/min"),
        (0, "/min", "0/min"),
        (3, "jobs", "3 jobs"),
        (1, "jobs", "1 job"),
        (1, "ms", "1 ms"),
    ],
)
def test_values_are_written_with_their_unit(value, unit, shown):
    assert format_value(value, unit) == shown


def test_every_chart_on_the_page_has_a_unit():
    units = {chart.field: chart.unit for _, group in charts.GROUPS for chart in group}

    assert units["cache_used_memory"] == units["state_used_memory"] == BYTES
    assert units["cache_hit_ratio"] == units["state_hit_ratio"] == PERCENT
    assert units["kestrel_avg_ms"] == "ms"
    assert units["cache_ops_per_sec"] == "ops/s"
    assert units["kestrel_commands"] == units["kestrel_errors"] == units["cache_evicted"] == "/min"
    assert units["queue_backlog"] == "jobs"


# --- The y axis ----------------------------------------------------------------------


def test_the_y_axis_is_labelled_with_its_low_and_high_in_the_unit():
    svg = drawn(MEMORY, [1_000_000, 1_020_000, 1_050_000])

    assert text_of(svg, "chart-y-low") == "1 MB"
    assert text_of(svg, "chart-y-high") == "1.06 MB"  # the next round number above the highest sample
    ys = [y for _, y in line_points(svg)]
    assert max(ys) == charts.PLOT_BOTTOM  # the lowest sample is on the axis's low
    assert all(charts.PLOT_TOP <= y <= charts.PLOT_BOTTOM for y in ys)


def test_a_series_that_is_all_zero_lies_at_the_bottom_at_zero():
    svg = drawn(EVICTIONS, [0, 0, 0, 0])

    assert text_of(svg, "chart-y-low") == "0/min"
    assert text_of(svg, "chart-y-high") == "1/min"
    assert {y for _, y in line_points(svg)} == {charts.PLOT_BOTTOM}


def test_a_flat_count_is_drawn_at_its_value_on_an_axis_from_zero():
    svg = drawn(LATENCY, [0.4, 0.4, 0.4])

    low, high = axis_range([0.4], unit="ms")
    assert (low, high) == (0.0, 0.4)
    assert text_of(svg, "chart-y-low") == "0 ms"
    assert text_of(svg, "chart-y-high") == "0.4 ms"
    assert {y for _, y in line_points(svg)} == {charts.PLOT_TOP}


def test_a_flat_memory_line_is_drawn_between_its_axis_labels():
    svg = drawn(MEMORY, [2_000_000] * 3)

    assert text_of(svg, "chart-y-low") == "1.9 MB"
    assert text_of(svg, "chart-y-high") == "2.1 MB"
    assert {y for _, y in line_points(svg)} == {(charts.PLOT_TOP + charts.PLOT_BOTTOM) / 2}


def test_a_ratio_runs_from_zero_to_a_hundred_percent():
    svg = drawn(RATIO, [91.5, 97.25])

    assert text_of(svg, "chart-y-low") == "0 %"
    assert text_of(svg, "chart-y-high") == "100 %"


def test_axis_bounds_are_round_numbers_without_floating_point_noise():
    assert axis_range([0.1, 0.2, 0.3], unit="ms") == (0.0, 0.3)
    assert axis_range([5, 5], unit="jobs") == (0.0, 6.0)
    assert axis_range([12, 97], unit="ops/s") == (0.0, 100.0)


# --- The time axis -------------------------------------------------------------------


def test_the_time_axis_runs_from_a_day_ago_to_now():
    svg = drawn(LATENCY, [0.5] * 1440)

    assert text_of(svg, "chart-x-start") == "24 h ago"
    assert text_of(svg, "chart-x-middle") == "12 h ago"
    assert text_of(svg, "chart-x-end") == "now"
    xs = [x for x, _ in line_points(svg)]
    assert xs[0] == charts.PLOT_LEFT
    assert xs[-1] == charts.PLOT_RIGHT


def test_the_time_axis_is_the_real_span_of_the_samples():
    assert text_of(drawn(LATENCY, [0.5] * 181), "chart-x-start") == "3 h ago"
    assert text_of(drawn(LATENCY, [0.5] * 46), "chart-x-start") == "45 min ago"


def test_the_time_axis_ends_now_even_when_the_samples_stopped():
    # The sampler stopped 3 hours ago: the right of the chart is empty up to now.
    points = [(NOW - 3 * 3600 - 60 * n, 1.0) for n in reversed(range(61))]
    svg = parsed(chart_svg(LATENCY, points, now=NOW, label="stopped"))

    assert text_of(svg, "chart-x-start") == "4 h ago"
    assert text_of(svg, "chart-x-end") == "now"
    assert max(x for x, _ in line_points(svg)) < charts.PLOT_RIGHT * 0.8


def test_a_day_of_samples_draws_the_lowest_and_highest_of_each_column():
    values = [1.0 + (n % 7) / 10 for n in range(1440)]
    values[700] = 50.0  # a spike of one sample
    values[-1] = 0.2  # the latest, drawn and read out whatever its column holds

    svg = drawn(LATENCY, values)

    columns = charts.PLOT_RIGHT - charts.PLOT_LEFT
    shown = svg.get("data-values", "").split("|")
    times = [int(t) for t in svg.get("data-times", "").split()]
    assert len(shown) == len(times) == len(line_points(svg)) <= 2 * columns + 2
    assert len(shown) < len(values) / 2
    assert times == sorted(times)
    assert "50 ms" in shown
    assert shown[-1] == "0.2 ms"
    assert times[-1] == 1439 * 60
    assert text_of(svg, "chart-y-high") == "60 ms"
    spike_y = round(charts.PLOT_BOTTOM - 50 / 60 * (charts.PLOT_BOTTOM - charts.PLOT_TOP), 1)
    assert min(y for _, y in line_points(svg)) == spike_y  # drawn, not averaged away


def test_a_gap_in_the_samples_is_a_gap_in_the_line():
    points = [(NOW - 3600, 1.0), (NOW - 3540, 2.0), (NOW - 60, 1.5), (NOW, 1.0), (NOW - 1800, 9.0)]
    points.sort()  # a lone sample between two gaps is a dot
    svg = parsed(chart_svg(LATENCY, points, now=NOW, label="gaps"))

    assert len(list(svg.iter("polyline"))) == 2
    assert len(list(svg.iter("circle"))) == 1


# --- What the script and assistive technology read -----------------------------------


def test_each_sample_is_in_the_svg_with_its_time_and_value_in_the_unit():
    svg = drawn(MEMORY, [1_000_000, 1_500_000, 1_250_000])

    assert svg.get("data-times") == "0 60 120"
    assert svg.get("data-values") == "1 MB|1.5 MB|1.25 MB"
    assert int(svg.get("data-start", "")) == NOW - 120
    assert int(svg.get("data-now", "")) == NOW
    assert svg.get("role") == "img"
    assert svg.findtext("title") == "a chart"  # the tooltip without JavaScript


def test_a_chart_is_named_with_its_latest_value_low_and_high():
    series = {"cache_used_memory": [(NOW - 120, 2_000_000), (NOW - 60, 1_000_000), (NOW, 1_500_000)]}

    groups = charts.chart_groups(series, now=NOW)

    memory = groups[0]["charts"][0]
    svg = parsed(memory["svg"])
    assert svg.get("aria-label") == (
        "Cache role, memory used: latest 1.5 MB, low 1 MB, high 2 MB, 3 samples over 2 min"
    )
    assert (memory["latest"], memory["low"], memory["high"]) == ("1.5 MB", "1 MB", "2 MB")


def test_a_chart_without_samples_says_so():
    svg = parsed(chart_svg(MEMORY, [], now=NOW, label="empty"))

    assert text_of(svg, "chart-empty") == "no samples yet"
    assert not list(svg.iter("polyline"))


def test_labels_are_escaped():
    assert "<b>" not in str(chart_svg(MEMORY, [(NOW, 1.0)], now=NOW, label="<b>"))


# --- The page ------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user(is_staff=True))
    return client


def chart_groups_in(html: str) -> dict[str, list[str]]:
    """Each chart group's heading on the page, and the fields of its charts in order."""
    section = html.split('id="chart-groups"', 1)[1].split('<section id="slowlog">', 1)[0]
    return {
        heading: re.findall(r'<svg class="chart"[^>]* data-field="([^"]+)"', body)
        for heading, body in re.findall(r"<h3>(.*?)</h3>(.*?)(?=<h3>|$)", section, re.S)
    }


@pytest.mark.django_db
def test_the_page_groups_the_charts_by_role(staff_client, state_redis):
    dashboard.ops_sample()
    dashboard.ops_sample()

    html = staff_client.get(reverse("ops")).content.decode()

    groups = chart_groups_in(html)
    role_groups = {name: fields for name, fields in groups.items() if ", " not in name}
    # A cluster role's nodes have groups of their own, "Cache role, primary 127.0.0.1:7000"
    # (test_cluster.py); the single server's roles have none.
    assert role_groups == {
        "Cache role": ["cache_used_memory", "cache_hit_ratio", "cache_evicted", "cache_ops_per_sec"],
        "State role": ["state_used_memory", "state_hit_ratio", "state_ops_per_sec"],
        "Kestrel and its queues": ["kestrel_avg_ms", "kestrel_commands", "kestrel_errors", "queue_backlog"],
    }
    # Two samples: every chart of the roles and Kestrel has its axes, in units.
    svgs = dict(re.findall(r'<svg class="chart"[^>]* data-field="([^"]+)"(.*?)</svg>', html, re.S))
    for field in [field for fields in role_groups.values() for field in fields]:
        assert 'class="chart-y chart-y-low"' in svgs[field], field
        assert ">now</text>" in svgs[field], field
    assert re.search(r'class="chart-y chart-y-high"[^>]*>[\d.]+ [kMG]?B<', html)
    assert "latest <strong>0/min</strong>" in html  # the errors chart's caption


@pytest.mark.django_db
def test_the_page_loads_its_styles_and_script_and_hides_what_needs_the_script(staff_client):
    html = staff_client.get(reverse("ops")).content.decode()

    assert re.search(r'<link rel="stylesheet" href="/static/css/ops\.css">', html)
    assert re.search(r'<script src="/static/js/ops-charts\.js" defer></script>', html)
    assert re.search(r'<div class="chart-tools" hidden>.*?Auto-refresh every 30 s', html, re.S)


@pytest.mark.django_db
def test_the_page_says_when_both_roles_are_one_server(single_server, staff_client):
    # The unit suite runs both roles on its one server (DB 0 and DB 1), as `make run` does.
    html = staff_client.get(reverse("ops")).content.decode()

    assert 'id="one-server-note"' in html
    assert "one Redis server" in html
    assert "make run" in html
    assert "Production gives each role its own server" in html


@pytest.fixture
def cache_on_its_own_server():
    """The cache role on a second Redis server for one test, as production runs it."""
    server = RedisServer(extra_config={"maxmemory-policy": "allkeys-lru"}).start()
    separate = copy.deepcopy(settings.CACHES)
    separate["default"]["LOCATION"] = f"{server.url}/0"
    try:
        with override_settings(CACHES=separate):
            yield server
            caches["default"].close()
    finally:
        # django-redis keeps pools per URL for the process's life: this one's server is going.
        for url in [url for url in ConnectionFactory._pools if url.startswith(server.url)]:
            ConnectionFactory._pools.pop(url).disconnect()
        server.cleanup()


@pytest.mark.django_db
def test_the_page_has_no_such_note_when_each_role_has_its_own_server(
    single_server, staff_client, cache_on_its_own_server
):
    assert get_redis("cache").connection_pool.connection_kwargs["port"] == cache_on_its_own_server.port

    response = staff_client.get(reverse("ops"))

    assert response.status_code == 200
    assert 'id="one-server-note"' not in response.content.decode()


def test_one_server_is_told_by_the_servers_run_id(single_server):
    other = RedisServer().start()
    try:
        state = dashboard.role_figures("state", get_redis("state"))
        same = dashboard.role_figures("cache", get_redis("cache"))
        separate = dashboard.role_figures("cache", Redis(host=other.host, port=other.port))
        down = dashboard.role_figures("cache", Redis(port=free_port(), socket_connect_timeout=0.5))
    finally:
        other.cleanup()

    assert state.run_id == same.run_id != ""
    assert dashboard.one_server([state, same])
    assert not dashboard.one_server([state, separate])
    assert not down.up
    assert not dashboard.one_server([state, down])
