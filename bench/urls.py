"""The project's URLconf plus the floor endpoints; see bench/settings.py."""

from django.urls import path

from bench.views import FloorApi, django_floor
from config.urls import handler404, handler500
from config.urls import urlpatterns as project_urlpatterns

urlpatterns = [
    *project_urlpatterns,
    path("bench/floor", FloorApi.as_view(), name="bench-floor"),
    path("bench/django-floor", django_floor, name="bench-django-floor"),
]

__all__ = ["handler404", "handler500", "urlpatterns"]
