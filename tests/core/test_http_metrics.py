"""HTTP request metrics (core.http_metrics) in prometheus-client's default registry.

Per route pattern (never the raw path), method and status class, counted when a response starts.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.http import HttpResponse, StreamingHttpResponse
from django.test import Client, RequestFactory
from django.urls import path

from core import metrics
from core.http_metrics import UNMATCHED, request_route


def requests(route: str, method: str, status: str) -> float:
    return (
        metrics.sample_value("kestrel_http_requests_total", {"route": route, "method": method, "status": status}) or 0
    )


def durations(route: str, method: str) -> tuple[float, float, float]:
    """(count, +Inf bucket, sum of seconds) of the duration histogram."""
    labels = {"route": route, "method": method}
    return (
        metrics.sample_value("kestrel_http_request_duration_seconds_count", labels) or 0,
        metrics.sample_value("kestrel_http_request_duration_seconds_bucket", {**labels, "le": "+Inf"}) or 0,
        metrics.sample_value("kestrel_http_request_duration_seconds_sum", labels) or 0,
    )


def item(request, item_id: int) -> HttpResponse:
    return HttpResponse(f"item {item_id}")


def stream(request) -> StreamingHttpResponse:
    return StreamingHttpResponse(iter(["one", "two"]), content_type="text/event-stream")


urlpatterns = [
    path("items/<id:item_id>", item, name="test-item"),
    path("stream", stream, name="test-stream"),
]


def test_the_middleware_runs_early_right_after_security():
    assert settings.MIDDLEWARE.index("core.http_metrics.RequestMetricsMiddleware") == 1
    assert settings.MIDDLEWARE[0] == "django.middleware.security.SecurityMiddleware"


@pytest.mark.django_db
def test_requests_are_counted_per_route_pattern_method_and_status(client: Client):
    healthz, metrics_page = requests("healthz", "GET", "2xx"), requests("metrics", "GET", "4xx")
    missing = requests(UNMATCHED, "GET", "4xx")
    post = requests("api/posts/<id:post_id>", "GET", "4xx")

    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 403  # anonymous
    assert client.get("/metrics").status_code == 403
    assert client.get("/no/such/page/1234").status_code == 404
    assert client.get("/api/posts/987654321").status_code in (401, 403, 404)

    assert requests("healthz", "GET", "2xx") == healthz + 1
    assert requests("metrics", "GET", "4xx") == metrics_page + 2
    assert requests(UNMATCHED, "GET", "4xx") == missing + 1
    assert requests("api/posts/<id:post_id>", "GET", "4xx") == post + 1  # the pattern, not the id
    count, infinite, seconds = durations("metrics", "GET")
    assert count == infinite >= 2
    assert seconds > 0


@pytest.mark.urls(__name__)
def test_the_route_is_the_pattern_and_an_unknown_method_is_other(client: Client):
    before = requests("items/<id:item_id>", "GET", "2xx")
    other = requests("items/<id:item_id>", "other", "2xx")

    for item_id in (1, 2, 3):
        client.get(f"/items/{item_id}")
    client.generic("BREW", "/items/4")

    assert requests("items/<id:item_id>", "GET", "2xx") == before + 3
    assert requests("items/<id:item_id>", "other", "2xx") == other + 1


@pytest.mark.urls(__name__)
def test_a_stream_counts_when_it_starts(client: Client):
    before = requests("stream", "GET", "2xx")

    response = client.get("/stream")

    assert requests("stream", "GET", "2xx") == before + 1  # its body not read yet
    assert b"".join(response.streaming_content) == b"onetwo"
    assert requests("stream", "GET", "2xx") == before + 1


@pytest.mark.urls(__name__)
def test_a_request_answered_before_url_resolution_still_gets_its_route():
    """A rate limit's 429 comes from a middleware, before the URL is resolved."""
    request = RequestFactory().get("/items/5")

    assert request.resolver_match is None
    assert request_route(request, 429) == "items/<id:item_id>"
    assert request_route(RequestFactory().get("/nowhere"), 429) == UNMATCHED
    assert request_route(RequestFactory().get("/items/5"), 404) == UNMATCHED  # not resolved twice
