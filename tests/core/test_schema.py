"""/api/schema: the error answers every operation can give, in the API's error format (core.schema)."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

ERROR = {"$ref": "#/components/schemas/Error"}


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    with django_db_blocker.unblock():
        response = APIClient().get("/api/schema?format=json")
    assert response.status_code == 200
    return response.json()


def _operations(schema: dict):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_answer_is_documented_in_the_error_format(schema):
    for label, operation in _operations(schema):
        # 414 comes from the web server, before Kestrel: no JSON to promise.
        errors = {code: answer for code, answer in operation["responses"].items() if code >= "400" and code != "414"}
        # The notification stream negotiates nothing: it answers text/event-stream to any Accept.
        negotiated = not any("text/event-stream" in r.get("content", {}) for r in operation["responses"].values())
        assert {"429", "503"} | ({"406"} if negotiated else set()) <= set(errors), label
        assert "414" in operation["responses"], label
        for code, answer in errors.items():
            assert answer["content"]["application/json"]["schema"] == ERROR, f"{label} {code}"


def test_the_errors_follow_what_an_operation_takes_and_who_may_call_it(schema):
    paths = schema["paths"]
    feed = paths["/api/feed"]["get"]["responses"]
    assert {"400", "401", "403"} <= set(feed)
    assert "404" not in feed  # no path id
    post = paths["/api/posts/{post_id}"]
    assert {"401", "403", "404"} <= set(post["get"]["responses"])  # anyone reads; a bad bearer token is refused
    assert "400" not in post["get"]["responses"]  # nothing to validate
    assert {"400", "404", "415"} <= set(post["patch"]["responses"])
    assert paths["/api/token"]["post"]["responses"]["401"]["description"] == "Invalid credentials"
    assert "403" not in paths["/api/token"]["post"]["responses"]  # credentials in the body only
    assert "409" in paths["/api/posts/{post_id}/like"]["post"]["responses"]


def _string_matches(schema: dict, value: str) -> bool:
    """The string keywords drf-spectacular writes: pattern, minLength, maxLength, oneOf of those."""
    if "oneOf" in schema:
        return sum(_string_matches(branch, value) for branch in schema["oneOf"]) == 1
    return (
        ("pattern" not in schema or re.search(schema["pattern"], value) is not None)
        and len(value) >= schema.get("minLength", 0)
        and len(value) <= schema.get("maxLength", len(value))
    )


@pytest.mark.parametrize(
    ("component", "field", "taken", "refused"),
    [
        ("PostInput", "title", ["a", " a ", "\u00e9t\u00e9"], ["", "   ", "\t\n", "a\u0000b", "\u0000"]),
        ("LoginInput", "password", [" ", "pass word"], ["", "pass\u0000word"]),  # taken as typed: spaces count
        ("PatchedProfileInput", "bio", ["", "  ", "a bio"], ["\u0000", "a\u0000"]),  # may be blank
    ],
)
def test_a_text_fields_schema_says_what_drf_refuses(schema, component, field, taken, refused):
    properties = schema["components"]["schemas"][component]["properties"][field]

    assert [value for value in taken if not _string_matches(properties, value)] == []
    assert [value for value in refused if _string_matches(properties, value)] == []


def test_a_field_with_its_own_pattern_keeps_it(schema):
    up_to = schema["components"]["schemas"]["ReadInput"]["properties"]["upTo"]

    assert up_to["pattern"] == "^[0-9]{1,19}-[0-9]{1,19}$"


def test_an_accept_header_without_json_is_406_in_the_error_format(as_ada):
    response = as_ada.post("/api/logout-all", HTTP_ACCEPT="text/csv")

    assert response.status_code == 406
    assert set(response.json()) == {"error"}


def test_the_notification_stream_is_described_with_both_ways_to_log_in(schema):
    # A plain Django view: drf-spectacular sees it only through feeds.schema's hook.
    stream = schema["paths"]["/api/notifications/stream"]["get"]
    assert stream["responses"]["200"]["content"] == {"text/event-stream": {"schema": {"type": "string"}}}
    assert {"bearerAuth", "cookieAuth"} == {name for scheme in stream["security"] for name in scheme}
    assert {"400", "401", "403", "429", "503"} <= set(stream["responses"])
    [header] = [p for p in stream["parameters"] if p["in"] == "header"]
    assert header["name"] == "Last-Event-ID"
    assert header["schema"]["pattern"] == "^[0-9]{1,19}-[0-9]{1,19}$"
