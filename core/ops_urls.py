"""The staff ops dashboard, included at the site root by config/urls.py."""

from django.urls import path

from core.ops_views import ops_dashboard

urlpatterns = [path("ops", ops_dashboard, name="ops")]
