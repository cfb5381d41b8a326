"""Monitoring endpoints, included at the site root by config/urls.py."""

from django.urls import path

from core.monitoring import metrics

urlpatterns = [
    path("metrics", metrics, name="metrics"),
]
