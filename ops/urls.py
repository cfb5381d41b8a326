"""The operators' pages, included at the site root by config/urls.py."""

from django.urls import path

from ops.views import healthz, metrics, ops_dashboard

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("ops", ops_dashboard, name="ops"),
]
