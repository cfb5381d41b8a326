from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from core.health import check_all
from core.monitoring import jobs_status


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when both Redis roles and the database answer, else 503 naming what failed.

    Touches neither the session nor the user, so it works while Redis is down.
    """
    probes = check_all()
    healthy = all(probe.ok for probe in probes)
    body = {
        "status": "ok" if healthy else "unavailable",
        "checks": {probe.name: probe.as_dict() for probe in probes},
    }
    if not healthy:
        body["failing"] = [probe.name for probe in probes if not probe.ok]
    # Informational: a stopped worker must not pull the web servers out of a load balancer.
    state_up = any(probe.name == "redis_state" and probe.ok for probe in probes)
    body["jobs"] = jobs_status() if state_up else {"ok": False, "error": "the state role is unavailable"}
    return JsonResponse(body, status=200 if healthy else 503)
