"""The operators' pages: /healthz, /metrics and /ops.

/ops is the staff dashboard of Redis and Kestrel figures, rendered on the server with
no front-end build: each chart is an <svg> polyline drawn by sparkline() from the
samples ops.dashboard keeps in a capped stream.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client.exposition import choose_encoder

from core.views import staff_required
from ops.dashboard import ops_dashboard_get
from ops.health import check_all
from ops.monitoring import build_registry, jobs_status

# (sample field, chart title, unit); one chart per field, in this order.
CHARTS = (
    ("state_used_memory", "State role: memory used", "bytes"),
    ("cache_used_memory", "Cache role: memory used", "bytes"),
    ("cache_hit_ratio", "Cache role: hit ratio", "%"),
    ("state_hit_ratio", "State role: hit ratio", "%"),
    ("cache_ops_per_sec", "Cache role: ops/s", "ops/s"),
    ("state_ops_per_sec", "State role: ops/s", "ops/s"),
    ("cache_evicted", "Cache role: keys evicted a minute", "keys"),
    ("kestrel_avg_ms", "Kestrel: average command latency", "ms"),
    ("kestrel_commands", "Kestrel: commands a minute", "commands"),
    ("kestrel_errors", "Kestrel: command errors a minute", "errors"),
    ("queue_backlog", "RQ: jobs queued", "jobs"),
)


def sparkline(points, *, width: int = 320, height: int = 64, label: str = "") -> SafeString:
    """An inline <svg> line chart of [(x, y), ...] (or plain y values), scaled to fit.

    No point: an empty frame saying so. One point: a dot (a line needs two).
    """
    values = [point if isinstance(point, tuple) else (index, point) for index, point in enumerate(points)]
    pad = 3
    frame = '<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{label}">'
    if not values:
        return format_html(
            frame + '<text x="{x}" y="{y}" text-anchor="middle" class="chart-empty">no samples yet</text></svg>',
            w=width,
            h=height,
            label=label,
            x=width // 2,
            y=height // 2,
        )
    xs, ys = [float(x) for x, _ in values], [float(y) for _, y in values]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)

    def place(x: float, y: float) -> tuple[float, float]:
        px = pad + (x - x0) / (x1 - x0) * (width - 2 * pad) if x1 > x0 else width / 2
        # A flat series sits in the middle rather than on an edge.
        py = height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad) if y1 > y0 else height / 2
        return round(px, 1), round(py, 1)

    placed = [place(x, y) for x, y in zip(xs, ys, strict=True)]
    if len(placed) == 1:
        (cx, cy) = placed[0]
        return format_html(
            frame + '<circle cx="{cx}" cy="{cy}" r="3"/></svg>', w=width, h=height, label=label, cx=cx, cy=cy
        )
    coordinates = format_html_join(" ", "{},{}", placed)
    return format_html(
        frame + '<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{points}"/></svg>',
        w=width,
        h=height,
        label=label,
        points=coordinates,
    )


def _charts(series: dict[str, list[tuple[float, float]]]) -> list[dict]:
    charts = []
    for name, title, unit in CHARTS:
        points = series.get(name, [])
        ys = [y for _, y in points]
        charts.append(
            {
                "title": title,
                "unit": unit,
                "svg": sparkline(points, label=title),
                "latest": ys[-1] if ys else None,
                "low": min(ys) if ys else None,
                "high": max(ys) if ys else None,
                "samples": len(points),
            }
        )
    return charts


@never_cache
@require_GET
@staff_required
def ops_dashboard(request: HttpRequest) -> HttpResponse:
    """Staff only (a visitor is sent to log in, anyone else gets the 403 page); never cached: the figures are live."""
    dashboard = ops_dashboard_get()
    return render(
        request,
        "ops/dashboard.html",
        {
            "dashboard": dashboard,
            "charts": _charts(dashboard.series),
            "generated_at": datetime.fromtimestamp(dashboard.generated_at, UTC),
        },
    )


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when both Redis roles and the database answer, else 503 naming what failed.

    Touches neither the session nor the user, so it works while Redis is down.
    """
    probes = check_all()
    healthy = all(probe.ok for probe in probes)
    body: dict[str, object] = {
        "status": "ok" if healthy else "unavailable",
        "checks": {probe.name: probe.as_dict() for probe in probes},
    }
    if not healthy:
        body["failing"] = [probe.name for probe in probes if not probe.ok]
    # Informational: a stopped worker must not pull the web servers out of a load balancer.
    state_up = any(probe.name == "redis_state" and probe.ok for probe in probes)
    body["jobs"] = jobs_status() if state_up else {"ok": False, "error": "the state role is unavailable"}
    return JsonResponse(body, status=200 if healthy else 503)


def _may_read_metrics(request: HttpRequest) -> bool:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        # A token, right or wrong, decides alone: Prometheus has no session.
        token = getattr(settings, "KESTREL_METRICS_TOKEN", "")
        return bool(token) and hmac.compare_digest(credentials.strip().encode(), token.encode())
    user = request.user
    return user.is_authenticated and user.is_staff


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics: staff session or bearer token, else 403; never cached."""
    if not _may_read_metrics(request):
        return JsonResponse({"error": "Forbidden"}, status=403)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(build_registry()), content_type=content_type)
