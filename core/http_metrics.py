"""HTTP request metrics: how many requests and how long, per route pattern, method and status class.

kestrel_http_requests_total{route,method,status} and kestrel_http_request_duration_seconds
{route,method}. The route is the URL pattern that matched ("api/posts/<id:post_id>"),
"<unmatched>" when none did: never the raw path, whose values have no bound. A streaming
response (SSE) counts when it starts. Summed in memory (a lock and a dict update a
request) and handed to prometheus-client by core.metrics.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve
from prometheus_client import Counter, Histogram

from core import metrics

UNMATCHED = "<unmatched>"
# Request latency buckets, seconds: a page from the L1 takes about a millisecond.
DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Any other method is "other": a client chooses it, and labels must stay bounded.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}

REQUESTS = Counter(
    "kestrel_http_requests",
    "HTTP requests answered, by route pattern, method and status class.",
    ["route", "method", "status"],
)
DURATION = Histogram(
    "kestrel_http_request_duration_seconds",
    "Time to a response's start (a stream's first byte, not its end), by route pattern and method.",
    ["route", "method"],
    buckets=DURATION_BUCKETS,
)


class RequestLabels(NamedTuple):
    """kestrel_http_requests_total's labels."""

    route: str
    method: str
    status: str  # the status class, "2xx"


class DurationLabels(NamedTuple):
    """kestrel_http_request_duration_seconds's labels."""

    route: str
    method: str


def request_route(request: HttpRequest, status: int) -> str:
    """The URL pattern `request` matched, "/" for the root, UNMATCHED when none did.

    A request answered before URL resolution (a rate limit's 429, say) is resolved
    here; a 404 without a match is not worth resolving twice.
    """
    match = request.resolver_match
    if match is None:
        if status == 404:
            return UNMATCHED
        try:
            match = resolve(request.path_info, getattr(request, "urlconf", None))
        except Resolver404:
            return UNMATCHED
    return match.route or "/"


class _Requests:
    """This process's request figures since the last flush: one lock, two dict updates a request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[RequestLabels, int] = {}
        self._durations: dict[DurationLabels, metrics.Observations] = {}  # in seconds

    def record(self, route: str, method: str, status: int, started: float) -> None:
        now = time.perf_counter()
        seconds = now - started
        bucket = bisect.bisect_left(DURATION_BUCKETS, seconds)
        method = method if method in METHODS else "other"
        series = RequestLabels(route, method, _STATUS.get(status // 100, "other"))
        timed = DurationLabels(route, method)
        with self._lock:
            self._counts[series] = self._counts.get(series, 0) + 1
            slot = self._durations.get(timed)
            if slot is None:
                slot = self._durations[timed] = metrics.Observations(0.0, [0] * (len(DURATION_BUCKETS) + 1))
            slot.total += seconds
            slot.buckets[bucket] += 1
        metrics.flush_if_due(now)

    def flush(self) -> None:
        with self._lock:
            counts, durations = self._counts, self._durations
            self._counts, self._durations = {}, {}
        for series, count in counts.items():
            REQUESTS.labels(*series).inc(count)
        for timed, slot in durations.items():
            metrics.observe_many(DURATION.labels(*timed), slot.total, slot.buckets)

    def forget(self) -> None:
        self._lock = threading.Lock()
        self._counts, self._durations = {}, {}


requests = _Requests()
metrics.register(requests)


class RequestMetricsMiddleware:
    """Records every request that reaches it (settings.MIDDLEWARE, right after SecurityMiddleware)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = self.get_response(request)  # a stream's body is iterated later, by the server
        status = response.status_code
        requests.record(request_route(request, status), request.method or "", status, started)
        return response
