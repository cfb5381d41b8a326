"""Job API: POST /api/send-email, a job's status, and report downloads (owner or staff only).

Reports are asked for through posts' POST /api/reports (posts.reports builds them).
A quota refusal is a 429 with Retry-After (jobs.serializers.quota_exceeded).
"""

from __future__ import annotations

from uuid import UUID

from django.http import FileResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api import BodySerializer
from core.schema import api_error
from core.types import AuthenticatedRequest
from jobs import selectors, services
from jobs.serializers import JobQueuedSerializer, quota_exceeded


class SendEmailInputSerializer(BodySerializer):
    email = serializers.EmailField()
    subject = serializers.CharField(max_length=200)
    message = serializers.CharField(max_length=5_000, required=False, default="Sent from Kestrel.")

    def validate_subject(self, value: str) -> str:
        # The service checks too (every door); here it becomes a 400 with the field's details.
        if errors := services.email_subject_errors(value):
            raise serializers.ValidationError(errors)
        return value


class SendEmailApi(APIView):
    """POST /api/send-email {"email", "subject", "message"}: 202 with the job's id.

    Anyone may email themselves, only staff others; 429 past the email quota.
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=SendEmailInputSerializer,
        responses={202: JobQueuedSerializer, 429: api_error("You have asked for 10 emails in the last hour, ...")},
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        data = SendEmailInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        to = data.validated_data["email"]
        # Anyone may email themselves; only staff may email others (no open relay).
        if not request.user.is_staff and to.lower() != request.user.email.lower():
            raise PermissionDenied("You can only send email to your own address")
        try:
            job = services.email_enqueue(
                to=to, subject=data.validated_data["subject"], body=data.validated_data["message"], owner=request.user
            )
        except services.QuotaExceeded as exc:
            return quota_exceeded(exc)
        return Response({"jobId": str(job.pk), "message": "Email queued"}, status=status.HTTP_202_ACCEPTED)


class JobDetailApi(APIView):
    """GET /api/jobs/{id}: the job's status (jobs.selectors.job_status); 404 if not the caller's."""

    permission_classes = [IsAuthenticated]

    @extend_schema(
        responses={
            200: inline_serializer(
                "JobStatus",
                {
                    "jobId": serializers.UUIDField(),
                    "kind": serializers.CharField(),
                    "createdAt": serializers.DateTimeField(),
                    "status": serializers.CharField(
                        help_text="pending, queued, started, scheduled (waiting to retry), finished, failed, "
                        "expired or unknown"
                    ),
                    "progress": serializers.JSONField(allow_null=True, help_text="{done, total} while it runs"),
                    "result": serializers.JSONField(allow_null=True),
                    "error": serializers.CharField(allow_null=True),
                    "retriesLeft": serializers.IntegerField(allow_null=True, required=False),
                },
            )
        }
    )
    def get(self, request: AuthenticatedRequest, job_id: UUID) -> Response:
        job = selectors.job_for(job_id=job_id, user=request.user)
        if job is None:
            raise NotFound("Job not found")
        return Response(selectors.job_status(job=job))


class ReportDownloadApi(APIView):
    """GET /api/reports/{job id}: the report's CSV file; 404 if not the caller's or not built yet."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={(200, "text/csv"): bytes})
    def get(self, request: AuthenticatedRequest, job_id: UUID) -> FileResponse:
        report = selectors.report_for(job_id=job_id, user=request.user)
        if report is None:
            raise NotFound("Report not found (or not ready yet)")
        return FileResponse(
            report.file.open("rb"), as_attachment=True, filename=f"kestrel-report-{job_id}.csv", content_type="text/csv"
        )
