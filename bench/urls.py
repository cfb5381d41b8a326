"""The project's URLconf plus the floor endpoints, the naive post reads and the metrics reader; see bench/settings.py.

The floor is served twice: under /bench/, where no rate-limit policy applies, and
under /api/, where the API policy does when the limiter is on (core.ratelimit).
"""

from django.urls import path

from bench.views import FloorApi, NaiveCountedPostApi, NaivePostApi, django_floor, worker_metrics
from config.urls import handler404, handler500
from config.urls import urlpatterns as project_urlpatterns

# First: the project's last /api/ route answers every path it has not matched with a 404.
urlpatterns = [
    path("bench/floor", FloorApi.as_view(), name="bench-floor"),
    path("api/bench-floor", FloorApi.as_view(), name="bench-api-floor"),
    path("bench/django-floor", django_floor, name="bench-django-floor"),
    path("bench/naive/posts/<int:post_id>", NaivePostApi.as_view(), name="bench-naive-post"),
    path("bench/naive-counted/posts/<int:post_id>", NaiveCountedPostApi.as_view(), name="bench-naive-counted-post"),
    path("bench/metrics", worker_metrics, name="bench-metrics"),
    *project_urlpatterns,
]

__all__ = ["handler404", "handler500", "urlpatterns"]
