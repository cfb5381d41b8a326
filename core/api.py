"""DRF plumbing shared by every app's apis.py: the error format (`{"error": ...}`), and strict input.

Every API error is `{"error": "<message>"}`, validation errors add `"details"`
(field -> list of messages), and the status codes are the reference article's.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Mapping
from typing import IO, Any, NotRequired, TypedDict

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, parsers, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.http import RETRY_AFTER_UNAVAILABLE, error_response, service_unavailable, unavailable_service

logger = logging.getLogger(__name__)


class ErrorBody(TypedDict):
    """The body of every API error (core.schema.ErrorSerializer documents it)."""

    error: str
    details: NotRequired[dict[str, list[str]]]  # validation errors: field -> messages


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    service = unavailable_service(exc)
    if service is not None:
        logger.error("%s is unavailable (%s): %s", service, context.get("view"), exc)
        return Response(
            {"error": f"{service} is unavailable; please try again shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)},
        )
    if isinstance(exc, SuspiciousOperation):
        # A body over DATA_UPLOAD_MAX_MEMORY_SIZE, too many fields...: Django answers
        # these with its own page (with DEBUG, a traceback), an API client wants JSON.
        logger.warning("Bad request to %s: %s", context.get("view"), exc)
        message = TOO_LARGE if isinstance(exc, RequestDataTooBig) else "Bad request"
        return Response({"error": message}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)

    response = drf_exception_handler(exc, context)
    # DRF answers its own APIExceptions only (Http404 and PermissionDenied became theirs above).
    if response is None or not isinstance(exc, exceptions.APIException):
        return None  # a bug: Django's 500 handling (handler500 below) takes over

    if isinstance(exc, exceptions.ValidationError):
        response.data = {"error": "Invalid input", "details": _as_details(exc.detail)}
    elif isinstance(exc, exceptions.NotAuthenticated):
        # DRF turns this into 403 when no authenticator sends WWW-Authenticate;
        # the article (and HTTP) say 401. DRF's own "credentials were not provided"
        # reads as the article's "Not logged in"; a subclass keeps its message
        # (accounts.authentication.TokenMissing: "Missing token").
        response.status_code = status.HTTP_401_UNAUTHORIZED
        plain = type(exc) is exceptions.NotAuthenticated
        response.data = {"error": "Not logged in" if plain else str(exc.detail)}
    elif isinstance(exc, exceptions.ParseError):
        response.data = {"error": f"Malformed request body: {exc.detail}"}
    else:
        response.data = {"error": str(exc.detail)}
    return response


def _as_details(detail: list[Any] | dict[str, Any]) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {field: [str(m) for m in (msgs if isinstance(msgs, list) else [msgs])] for field, msgs in detail.items()}
    return {"non_field_errors": [str(m) for m in (detail if isinstance(detail, list) else [detail])]}


TOO_LARGE = "Request body too large"


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, bounded: DATA_UPLOAD_MAX_MEMORY_SIZE bytes, nesting Python can follow.

    DRF reads the body from the socket itself, past Django's size check, and its
    parser lets RecursionError (`[[[[...` 5,000 deep) through as a 500.
    """

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        body = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(body) > limit:
            raise RequestDataTooBig(TOO_LARGE)
        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply") from None


def json_handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's answer to a bad request no view handled (a body too large for a middleware)."""
    if isinstance(exception, RequestDataTooBig):
        return error_response(request, 400, TOO_LARGE)
    return error_response(request, 400, "Bad request")


def json_handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse({"error": "Not found"}, status=404)
    return page_not_found(request, exception)


@csrf_exempt  # answers nothing but 404: no form to forge, and a POST must not get CSRF's 403 page
def api_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Every /api/ path no route matched, any method: JSON 404, with DEBUG on too.

    Django's DEBUG 404 page bypasses handler404; a client (or a fuzzer) of the API
    must get the API's answer either way.
    """
    return JsonResponse({"error": "Not found"}, status=404)


def json_handler500(request: HttpRequest) -> HttpResponse:
    """Django's last resort for an exception nothing else handled, in a view or a middleware.

    An outage raised where no view's handler sees it (the rate limiter reading the
    user's row while the database is down) is still an outage: 503 with Retry-After,
    not a 500. Django calls this inside its `except`, so the exception is at hand.
    """
    from django.views.defaults import server_error

    exc = sys.exc_info()[1]
    service = unavailable_service(exc) if exc is not None else None
    if service is not None:
        return service_unavailable(request, service)
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "Internal server error"}, status=500)
    return server_error(request)


# --- Input: what the schema says, and nothing DRF would coerce into it -----------------

_INTEGER = re.compile(r"-?[0-9]+")


# A JSON body, each field in the JSON type /api/schema gives it. DRF coerces on its
# own: `"title": 5` becomes "5", `"userId": "5"` or 5.0 becomes 5. A client that sends
# those has a bug the schema already names, so it gets a 400. (Comments, not docstrings:
# drf-spectacular would print a base class's docstring on every subclass's schema.)
class BodySerializer(serializers.Serializer[Any]):
    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            wrong = {
                name: [problem]
                for name, field in self.fields.items()
                if data.get(name) is not None and (problem := _wrong_json_type(field, data[name]))
            }
            if wrong:
                raise exceptions.ValidationError(wrong)
        return super().to_internal_value(data)


def _wrong_json_type(field: serializers.Field[Any, Any, Any, Any], value: object) -> str | None:
    if isinstance(field, serializers.CharField) and not isinstance(value, str):
        return "Must be a string."
    if isinstance(field, serializers.IntegerField) and (isinstance(value, bool) or not isinstance(value, int)):
        return "Must be an integer."
    if isinstance(field, serializers.BooleanField) and not isinstance(value, bool):
        return "Must be true or false."
    return None


# Query parameters as /api/schema gives them: each at most once, an integer in ASCII
# digits, and an empty value a value (DRF's form handling reads `?before=` as no
# `before` at all, and of `?count=5&count=x` keeps the last).
class QuerySerializer(serializers.Serializer[Any]):
    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "getlist"):
            # keys(): the names (the stubs type iterating BindingDict itself as its fields).
            names = self.fields.keys()
            repeated = {name: ["Give this parameter once."] for name in names if len(data.getlist(name)) > 1}
            if repeated:
                raise exceptions.ValidationError(repeated)
            data = {name: data[name] for name in self.fields if name in data}
        wrong = {
            name: ["A valid integer is required."]
            for name, field in self.fields.items()
            if isinstance(field, serializers.IntegerField) and name in data and not _INTEGER.fullmatch(str(data[name]))
        }
        if wrong:
            raise exceptions.ValidationError(wrong)
        return super().to_internal_value(data)
