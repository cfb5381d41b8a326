"""The operators' pages: /healthz, /metrics and /ops.

/ops is the staff dashboard of Redis and Kestrel figures, rendered on the server with
no front-end build: each chart is an inline <svg> drawn by ops.charts from the samples
ops.dashboard keeps in a capped stream.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client.exposition import choose_encoder

from core.views import staff_required
from ops.charts import chart_groups
from ops.dashboard import ops_dashboard_get
from ops.health import check_all
from ops.monitoring import build_registry, jobs_status


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
            "chart_groups": chart_groups(dashboard.series, now=dashboard.generated_at),
            "generated_at": datetime.fromtimestamp(dashboard.generated_at, UTC),
        },
    )


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the Redis roles and the database answer, else 503 naming what failed.

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
    # The queues are on the queue role, which is the state role's database unless probed apart.
    up = {probe.name: probe.ok for probe in probes}
    role = "queue" if "redis_queue" in up else "state"
    body["jobs"] = jobs_status() if up[f"redis_{role}"] else {"ok": False, "error": f"the {role} role is unavailable"}
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
