"""The OpenAPI schema's error answers, the same for every API view (README, "API").

drf-spectacular documents only the answers a view's `extend_schema` names; every view
can also answer the errors below, decided by what the view takes (a body, a query, a
path id), who may call it and the middleware in front of it. Documenting them here,
once, keeps `/api/schema` honest without repeating six error codes on every view.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.drainage import has_override
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import Direction, OpenApiResponse
from rest_framework import serializers

from core.api import ErrorBody


class ErrorSerializer(serializers.Serializer[ErrorBody]):
    """Every API error: `{"error": "<message>"}`; validation errors add `details` (field -> messages)."""

    error = serializers.CharField()
    details = serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False)


# Regular expressions the same in ECMA 262 (the schema's dialect) and Python (what
# DRF and the fuzzers run): no NUL and not empty (drf-spectacular adds "or empty" as a
# oneOf where blank is allowed, so this must not match "" too); no NUL and something
# besides white space.
_NO_NUL = r"^[^\u0000]+$"
_NOT_BLANK = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"


def api_error(description: str) -> OpenApiResponse:
    """An error answer for `extend_schema(responses=...)`, in the API's error format."""
    return OpenApiResponse(ErrorSerializer, description=description)


class KestrelAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema plus the error answers every operation can give.

    An answer a view documents itself (a 409 with its own description) is kept.
    """

    def _get_response_bodies(self, direction: Direction = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code, description in self._error_answers().items():
            if code not in responses:
                # drf-spectacular leaves this method unannotated (its answer is a schema dict).
                responses[code] = self._get_response_for_code(api_error(description), code)  # type: ignore[no-untyped-call, unused-ignore]
        # Refused by the web server before Kestrel sees it (gunicorn's limit_request_line,
        # 4094 bytes; a proxy in front has its own), so not in the API's JSON.
        responses.setdefault("414", {"description": "The request line is too long for the web server"})
        return dict(sorted(responses.items()))

    def get_tags(self) -> list[str]:
        """The operation's area, from settings.KESTREL_API_AREAS by the first segment after
        /api/ ("<first>/<last>" first, for a sub-resource filed elsewhere)."""
        areas: dict[str, str] = getattr(settings, "KESTREL_API_AREAS", {})
        parts = [part for part in self.path.split("/") if part][1:]
        for name in ([f"{parts[0]}/{parts[-1]}"] if len(parts) > 1 else []) + parts[:1]:
            if name in areas:
                return [areas[name]]
        tags: list[str] = super().get_tags()
        return tags

    def _get_serializer_field_meta(self, field: object, direction: Direction) -> dict[str, Any]:
        # drf-spectacular leaves this method unannotated; it answers a schema dict.
        meta: dict[str, Any] = super()._get_serializer_field_meta(field, direction)  # type: ignore[no-untyped-call, unused-ignore]
        if (
            direction != "request"
            or not isinstance(field, serializers.CharField)
            or field.read_only
            or has_override(field, "field")  # a field that states its own schema (a pattern)
        ):
            return meta
        # What DRF refuses and drf-spectacular does not say: a NUL character anywhere
        # (every CharField), and where allow_blank is off a blank string, judged after
        # trimming, so spaces alone are blank too.
        if field.allow_blank:
            meta.setdefault("pattern", _NO_NUL)
        else:
            meta.setdefault("minLength", 1)
            meta.setdefault("pattern", _NOT_BLANK if field.trim_whitespace else _NO_NUL)
        return meta

    def _error_answers(self) -> dict[str, str]:
        answers: dict[str, str] = {}
        takes_body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        parameters = self._get_parameters()
        if takes_body or any(parameter["in"] == "query" for parameter in parameters):
            answers["400"] = "Invalid input (`details` names each field's problems) or a malformed JSON body"
        # A bearer header is judged by its token alone wherever an authenticator runs, even
        # on a view anyone may call: nothing after the scheme is 401, a bad token 403.
        authenticates = bool(self.view.get_authenticators())
        anonymous = {} in self.get_auth()
        if authenticates or not anonymous:
            answers["401"] = "Not logged in, or `Authorization: Bearer` without a token"
            answers["403"] = "Forbidden: an invalid or revoked token, a missing CSRF token, or not yours"
        if any(parameter["in"] == "path" for parameter in parameters):
            answers["404"] = "No such object (or not yours to see)"
        # DRF's content negotiation runs on every view: an Accept header that admits no
        # JSON (or is malformed) is refused before the view.
        answers["406"] = "The Accept header admits no type the API answers (application/json)"
        if takes_body:
            answers["415"] = "The body is not JSON (Content-Type: application/json)"
        # core.ratelimit's middleware covers every path under /api/; Redis outages are 503 (core.api).
        answers["429"] = "Rate limit exceeded (see Retry-After)"
        answers["503"] = "Redis is unavailable; try again after Retry-After"
        return answers
