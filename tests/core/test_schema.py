"""/api/schema: the error answers every operation can give, in the API's error format (core.schema)."""

from __future__ import annotations

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
        assert {"429", "503"} <= set(errors), label
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


def test_a_required_text_field_says_that_blank_or_spaces_are_refused(schema):
    title = schema["components"]["schemas"]["PostInput"]["properties"]["title"]

    assert title["minLength"] == 1
    assert title["pattern"] == r"\S"
    password = schema["components"]["schemas"]["LoginInput"]["properties"]["password"]
    assert "pattern" not in password  # taken as typed: spaces count
