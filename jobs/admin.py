"""The jobs admin: job rows and report files; RQ's own dashboard (/admin/rq/) shows the queues."""

from django.contrib import admin

from jobs.models import Job, Report


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """The durable side of jobs; RQ's own dashboard (/admin/rq/) shows queues and
    failed jobs and requeues them."""

    list_display = ["id", "kind", "owner", "created_at", "enqueued_at", "completed_at"]
    list_filter = ["kind"]
    raw_id_fields = ["owner"]
    readonly_fields = ["id", "created_at", "enqueued_at", "completed_at", "result"]


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    """Activity report files, one per report job."""

    list_display = ["job", "owner", "created_at"]
    raw_id_fields = ["owner", "job"]
