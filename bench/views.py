"""Floor views: the least a request can cost in each framework layer.

Every path is measured as a ratio to these, so the figures say what Kestrel's own
code adds, not how fast this machine is. Also the reader of each worker's in-process
counters (core.metrics), which the harness uses to tell cache hits from misses.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, JsonResponse
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import metrics


class FloorApi(APIView):
    """DRF with nothing to do: no authentication (so the session is never read) and no permissions."""

    authentication_classes = []
    permission_classes = []

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


def django_floor(request: HttpRequest) -> JsonResponse:
    """Plain Django through the same middleware, without DRF's request and response wrapping."""
    return JsonResponse({"ok": True})


def worker_metrics(request: HttpRequest) -> JsonResponse:
    """This worker's core.metrics counters and pid: the harness reads every worker's
    around a timed run to count cache hits, misses and loads (bench.harness.worker_metrics)."""
    series = [[name, labels, count] for name, rows in metrics.snapshot().items() for labels, count in rows]
    return JsonResponse({"pid": os.getpid(), "series": series})
