"""The /ops charts: inline SVG line charts of the sampled series, with units and axes.

Drawn on the server, with no chart library and no build step. Each chart has a y axis
labelled with its low and high in the series' unit, a time axis that ends at the
page's "now", and its samples in data- attributes, which static/js/ops-charts.js reads
to show the value and time under the pointer or the keyboard focus. Without
JavaScript the chart's <title> and the caption give the latest value, low and high.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

BYTES = "bytes"
PERCENT = "%"
SINGULAR = {"jobs": "job"}

# The drawing, in viewBox units: y labels left of the plot, time labels under it.
WIDTH, HEIGHT = 320, 150
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 62, 312, 8, 126
# Samples further apart than this are not joined: a role was down or the sampler stopped.
GAP_SECONDS = 5 * 60


@dataclass(frozen=True)
class Chart:
    field: str  # the sample field (ops.dashboard.ops_sample)
    title: str
    unit: str
    zero: bool = True  # the axis starts at zero; memory's fits the samples instead


# Grouped as the page shows them: each role's server, then Kestrel-wide figures. A
# cluster role's group charts the sum over its primaries, and is followed by one group
# per node with the same charts (node_groups).
GROUPS: tuple[tuple[str, tuple[Chart, ...]], ...] = (
    (
        "Cache role",
        (
            Chart("cache_used_memory", "Memory used", BYTES, zero=False),
            Chart("cache_hit_ratio", "Hit ratio", PERCENT),
            Chart("cache_evicted", "Keys evicted", "/min"),
            Chart("cache_ops_per_sec", "Commands processed", "ops/s"),
        ),
    ),
    (
        "State role",
        (
            Chart("state_used_memory", "Memory used", BYTES, zero=False),
            Chart("state_hit_ratio", "Hit ratio", PERCENT),
            Chart("state_ops_per_sec", "Commands processed", "ops/s"),
        ),
    ),
    (
        "Kestrel and its queues",
        (
            Chart("kestrel_avg_ms", "Average command latency", "ms"),
            Chart("kestrel_commands", "Commands sent", "/min"),
            Chart("kestrel_errors", "Command errors", "/min"),
            Chart("queue_backlog", "Jobs queued", "jobs"),
        ),
    ),
)


# The groups whose charts have node groups on a cluster: group name -> role.
ROLE_GROUPS = {"Cache role": "cache", "State role": "state"}


def node_field(role: str, address: str, name: str) -> str:
    """The sample field of one node of a cluster role: "cache@10.0.0.5:7000/used_memory".

    A role's own field is "<role>_<name>"; "@" and "/" cannot be in a host:port.
    """
    return f"{role}@{address}/{name}"


def node_groups(
    name: str, charts: tuple[Chart, ...], series: dict[str, list[tuple[float, float]]]
) -> list[tuple[str, tuple[Chart, ...]]]:
    """For a role's group, one group per node of the role found in `series` (a cluster
    role's), primaries first: its charts are the role's, on the node's fields."""
    role = ROLE_GROUPS.get(name)
    if role is None:
        return []
    addresses = {field.partition("/")[0].partition("@")[2] for field in series if field.startswith(f"{role}@")}
    kinds = {}
    for address in addresses:
        latest = series.get(node_field(role, address, "primary"))
        kinds[address] = "primary" if latest and latest[-1][1] == 1 else "replica"
    return [
        (
            f"{name}, {kinds[address]} {address}",
            tuple(
                Chart(
                    node_field(role, address, chart.field.removeprefix(f"{role}_")), chart.title, chart.unit, chart.zero
                )
                for chart in charts
            ),
        )
        for address in sorted(addresses, key=lambda address: (kinds[address] != "primary", address))
    ]


# --- Numbers and times, as people read them ------------------------------------------


def _significant(number: float) -> str:
    """Three significant digits (more for a whole number), no trailing zeros, no exponent."""
    if number == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(abs(number))))
    text = f"{number:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_value(value: float, unit: str) -> str:
    """A value with its unit: "12.3 MB", "97.5 %", "0.8 ms", "35 ops/s", "12.3k/min"."""
    if unit == PERCENT:
        # Two decimals, as the samples keep them: 99.95 % must not read as 100 %.
        return f"{value:.2f}".rstrip("0").rstrip(".") + " %"
    if unit == BYTES:
        size = value
        for prefix in ("", "k", "M", "G", "T"):
            if abs(size) < 1000 or prefix == "T":
                break
            size /= 1000
        return f"{_significant(size)} {prefix}B"
    size, suffix = value, ""
    for factor, name in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if abs(value) >= factor:
            size, suffix = value / (1000 if name == "k" else factor), name
            break
    number = _significant(size) + suffix
    if unit.startswith("/"):
        return f"{number}{unit}"
    return f"{number} {SINGULAR.get(unit, unit) if number == '1' else unit}"


def ago(seconds: float) -> str:
    """How long ago, in the largest unit that keeps it short: "45 s ago", "12 min ago", "24 h ago"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{round(seconds)} s ago"
    if seconds < 120 * 60:
        return f"{round(seconds / 60)} min ago"
    return f"{round(seconds / 3600)} h ago"


# --- The y axis ----------------------------------------------------------------------


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `raw`."""
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if raw <= m * base * (1 + 1e-9))


def axis_range(values: Sequence[float], *, unit: str, zero: bool = True) -> tuple[float, float]:
    """The y axis's low and high: round numbers around the values.

    A ratio runs from 0 to 100 %. A count or rate starts at zero, so a series that is
    all zero lies on the bottom of the chart; memory fits its samples, so a change of
    a few kB in a server of many MB stays visible.
    """
    low, high = min(values), max(values)
    if unit == PERCENT:
        return 0.0, float(max(100.0, high))
    if zero:
        low, high = min(low, 0.0), max(high, 0.0)
    if high == low:  # flat: all zero (zero-based), or a flat memory line
        pad = abs(low) * 0.05 or 1.0
        low, high = (low, high + pad) if zero else (low - pad, high + pad)
    step = _nice_step((high - low) / 4)
    bottom, top = math.floor(low / step) * step, math.ceil(high / step) * step
    if bottom < 0 <= low:
        bottom = 0.0
    # Rounded to the step's precision: floating point must not print 0.30000000000000004.
    digits = max(0, 12 - math.floor(math.log10(step)))
    return float(round(bottom, digits)), float(round(top, digits))


# --- The drawing ---------------------------------------------------------------------


def _segments(points: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The samples split where they are more than GAP_SECONDS apart."""
    segments: list[list[tuple[float, float]]] = [[points[0]]]
    for previous, point in zip(points, points[1:], strict=False):
        if point[0] - previous[0] > GAP_SECONDS:
            segments.append([])
        segments[-1].append(point)
    return segments


def _thin(segment: list[tuple[float, float]], *, start: float, end: float) -> list[tuple[float, float]]:
    """The lowest and highest sample of each column of the plot, and the first and last.

    A day of samples is several to a column: what is drawn and read out stays real
    samples, spikes included, at a fraction of the page's weight.
    """
    columns = PLOT_RIGHT - PLOT_LEFT
    buckets: dict[int, list[tuple[float, float]]] = {}
    for point in segment:
        column = int((point[0] - start) / (end - start) * columns) if end > start else 0
        buckets.setdefault(column, []).append(point)
    kept = {segment[0], segment[-1]}
    for bucket in buckets.values():
        kept |= {min(bucket, key=lambda point: point[1]), max(bucket, key=lambda point: point[1])}
    return sorted(kept)


def chart_svg(chart: Chart, points: Sequence[tuple[float, float]], *, now: float, label: str) -> SafeString:
    """The <svg> of one series [(unix time, value), ...], oldest first, its time axis ending at `now`.

    No point: an empty frame saying so. A lone sample (one point, or one between two
    gaps) is a dot: a line needs two.
    """
    frame = (
        '<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{label}"'
        ' data-field="{field}"'
    )
    if not points:
        return format_html(
            frame + '><title>{label}</title><text x="{x}" y="{y}" text-anchor="middle" class="chart-empty">'
            "no samples yet</text></svg>",
            w=WIDTH,
            h=HEIGHT,
            label=label,
            field=chart.field,
            x=WIDTH // 2,
            y=HEIGHT // 2,
        )
    points = [(float(t), float(v)) for t, v in points]
    values = [v for _, v in points]
    start, end = points[0][0], max(now, points[-1][0])
    low, high = axis_range(values, unit=chart.unit, zero=chart.zero)

    def place(when: float, value: float) -> tuple[float, float]:
        x = PLOT_LEFT + (when - start) / (end - start) * (PLOT_RIGHT - PLOT_LEFT) if end > start else PLOT_RIGHT
        y = PLOT_BOTTOM - (value - low) / (high - low) * (PLOT_BOTTOM - PLOT_TOP)
        return round(x, 1), round(y, 1)

    series, drawn = [], []
    for segment in _segments(points):
        kept = _thin(segment, start=start, end=end)
        drawn += kept
        placed = [place(t, v) for t, v in kept]
        if len(placed) == 1:
            series.append(format_html('<circle cx="{}" cy="{}" r="2"/>', *placed[0]))
        else:
            series.append(format_html('<polyline points="{}"/>', format_html_join(" ", "{},{}", placed)))
    middle_y = (PLOT_TOP + PLOT_BOTTOM) / 2
    text_y, label_x = HEIGHT - 5, PLOT_LEFT - 6
    return format_html(
        frame + ' data-start="{start}" data-now="{now}" data-times="{offsets}" data-values="{labels}">'
        "<title>{label}</title>"
        '<line class="chart-grid" x1="{left}" x2="{right}" y1="{top}" y2="{top}"/>'
        '<line class="chart-grid" x1="{left}" x2="{right}" y1="{middle_y}" y2="{middle_y}"/>'
        '<line class="chart-baseline" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>'
        '<text class="chart-y chart-y-high" x="{label_x}" y="{high_y}" text-anchor="end">{high}</text>'
        '<text class="chart-y chart-y-low" x="{label_x}" y="{low_y}" text-anchor="end">{low}</text>'
        '<text class="chart-x chart-x-start" x="{left}" y="{text_y}" text-anchor="start">{since}</text>'
        '<text class="chart-x chart-x-middle" x="{centre}" y="{text_y}" text-anchor="middle">{halfway}</text>'
        '<text class="chart-x chart-x-end" x="{right}" y="{text_y}" text-anchor="end">now</text>'
        '<g class="chart-series">{series}</g></svg>',
        w=WIDTH,
        h=HEIGHT,
        label=label,
        field=chart.field,
        start=round(start),
        now=round(end),
        # Each drawn sample's seconds after data-start, and its value as the axis writes
        # it: what the script reads out. Plain lists, lighter than JSON in an attribute.
        offsets=" ".join(str(round(t - start)) for t, _ in drawn),
        labels="|".join(format_value(v, chart.unit) for _, v in drawn),
        left=PLOT_LEFT,
        right=PLOT_RIGHT,
        top=PLOT_TOP,
        middle_y=middle_y,
        bottom=PLOT_BOTTOM,
        label_x=label_x,
        high_y=PLOT_TOP + 4,
        low_y=PLOT_BOTTOM + 4,
        high=format_value(high, chart.unit),
        low=format_value(low, chart.unit),
        text_y=text_y,
        centre=(PLOT_LEFT + PLOT_RIGHT) / 2,
        since=ago(end - start),
        halfway=ago((end - start) / 2),
        series=format_html_join("", "{}", ((part,) for part in series)),
    )


def _page_groups(series: dict[str, list[tuple[float, float]]]) -> Iterator[tuple[str, tuple[Chart, ...]]]:
    for name, charts in GROUPS:
        yield name, charts
        yield from node_groups(name, charts, series)


def chart_groups(series: dict[str, list[tuple[float, float]]], *, now: float) -> list[dict]:
    """The page's charts, by group: [{"name", "charts": [{"title", "svg", "latest", ...}]}]."""
    groups = []
    for name, charts in _page_groups(series):
        drawn = []
        for chart in charts:
            points = series.get(chart.field, [])
            values = [value for _, value in points]
            summary = {}
            label = f"{name}, {chart.title.lower()}: no samples yet"
            if values:
                summary = {
                    "latest": format_value(values[-1], chart.unit),
                    "low": format_value(min(values), chart.unit),
                    "high": format_value(max(values), chart.unit),
                }
                span = ago(max(now, points[-1][0]) - points[0][0]).removesuffix(" ago")
                label = (
                    f"{name}, {chart.title.lower()}: latest {summary['latest']}, low {summary['low']}, "
                    f"high {summary['high']}, {len(values)} samples over {span}"
                )
            drawn.append(
                {
                    "field": chart.field,
                    "title": chart.title,
                    "svg": chart_svg(chart, points, now=now, label=label),
                    "samples": len(values),
                    **summary,
                }
            )
        groups.append({"name": name, "charts": drawn})
    return groups
