"""The operators' pages, included at the site root by config/urls.py."""

from django.urls import path

from ops.mail import dev_mail
from ops.views import healthz, metrics, ops_dashboard

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("ops", ops_dashboard, name="ops"),
    path("ops/mail", dev_mail, name="ops-mail"),
]
