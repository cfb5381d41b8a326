"""The project's URLconf plus the floor endpoints, the naive post reads and the metrics reader; see bench/settings.py.

The floor is served twice: under /bench/, where no rate-limit policy applies, and
under /api/, where the API policy does when the limiter is on (core.ratelimit).
"""

from django.urls import include, path

from bench.views import FloorApi, NaiveCountedPostApi, NaivePostApi, django_floor, worker_metrics
from config.urls import api_route, handler404, handler500
from config.urls import urlpatterns as project_urlpatterns

# A real deployment's /api/ routes come first in its URLconf, and so do they here: the
# paths measured against the floor try no benchmark pattern before their own, and the
# floor tries the project's /api/ prefix before its own. api/bench-floor goes before
# the project's /api/ include, whose last route answers every path it has not matched.
bench_urlpatterns = [
    path("floor", FloorApi.as_view(), name="bench-floor"),
    path("django-floor", django_floor, name="bench-django-floor"),
    path("naive/posts/<int:post_id>", NaivePostApi.as_view(), name="bench-naive-post"),
    path("naive-counted/posts/<int:post_id>", NaiveCountedPostApi.as_view(), name="bench-naive-counted-post"),
    path("metrics", worker_metrics, name="bench-metrics"),
]

urlpatterns = [
    path("api/bench-floor", FloorApi.as_view(), name="bench-api-floor"),
    api_route,
    path("bench/", include(bench_urlpatterns)),
    *(pattern for pattern in project_urlpatterns if pattern is not api_route),
]

__all__ = ["handler404", "handler500", "urlpatterns"]
