"""The jobs app's URLs: API (api_urlpatterns) and the reports page (site_urlpatterns)."""

from django.urls import path

from jobs import apis, views

api_urlpatterns = [
    path("send-email", apis.SendEmailApi.as_view(), name="api-send-email"),
    path("reports/<uuid:job_id>", apis.ReportDownloadApi.as_view(), name="api-report-download"),
    path("jobs/<uuid:job_id>", apis.JobDetailApi.as_view(), name="api-job"),
]

site_urlpatterns = [
    path("reports", views.reports, name="reports"),
    path("reports/email-me", views.email_me, name="email-me"),
]
