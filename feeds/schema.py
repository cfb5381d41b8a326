"""The notification stream in the OpenAPI schema (a drf-spectacular postprocessing hook).

GET /api/notifications/stream is a plain Django view (DRF has no renderer for
text/event-stream), so drf-spectacular cannot see it; this hook describes it beside
the operations it generates, with the same error shapes and both ways to log in.
"""

from __future__ import annotations

from feeds.serializers import STREAM_ID_SCHEMA

STREAM_PATH = "/api/notifications/stream"

_ERRORS = {
    "400": "Last-Event-ID (or lastEventId) is not a notification id",
    "401": "Not logged in, or `Authorization: Bearer` without a token",
    "403": "An invalid, expired or revoked token, or another person's userId",
    "405": "Only GET opens a stream",
    "429": "This person has as many streams open as allowed (5 by default; see Retry-After): poll meanwhile",
    "503": "This server has no stream to spare, or Redis is unavailable (see Retry-After)",
}


def add_notification_stream(result: dict, generator, request, public) -> dict:
    """Add GET /api/notifications/stream to the generated schema."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    result["paths"][STREAM_PATH] = {
        "get": {
            "operationId": "notifications_stream",
            "summary": "Your notifications, live (Server-Sent Events)",
            "description": (
                "A text/event-stream: `retry:` first, then one `notification` event per notification "
                "(`id:` its stream id, `data:` the JSON of GET /api/notifications' items), keep-alive "
                "comments, and a closing comment when the stream ends: after 5 minutes, on shutdown, "
                "or within seconds of its session or token being revoked (log-out, log-out everywhere, "
                "a password change) or its access token expiring. Reconnect with Last-Event-ID to "
                "replay what was missed; an id past the newest replays nothing."
            ),
            "tags": ["notifications"],
            "parameters": [
                {
                    "in": "header",
                    "name": "Last-Event-ID",
                    "schema": STREAM_ID_SCHEMA,
                    "description": "resume after this id",
                },
                {
                    "in": "query",
                    "name": "lastEventId",
                    "schema": STREAM_ID_SCHEMA,
                    "description": "the same, for a new EventSource",
                },
            ],
            "security": [{"bearerAuth": []}, {"cookieAuth": []}],
            "responses": {
                "200": {"content": {"text/event-stream": {"schema": {"type": "string"}}}, "description": "The stream"},
                **{status: {"content": error, "description": text} for status, text in _ERRORS.items()},
                "414": {"description": "The request line is too long for the web server"},
            },
        }
    }
    return result
