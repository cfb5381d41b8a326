"""The API answers a hostile body or an unknown path with its own 4xx JSON, never a 500 or a page."""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from posts.services import post_create

pytestmark = pytest.mark.django_db

NESTED = {"array": "[" * 5_000, "object": '{"a":' * 5_000}


def operations_with_a_body() -> list[tuple[str, str]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return sorted(
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if "requestBody" in op
    )


@pytest.fixture
def staff_client(make_user):
    """A staff member who owns a post: every operation with a body gets as far as reading it."""
    staff = make_user(is_staff=True)
    client = APIClient()
    client.force_login(staff)
    client.post_id = post_create(author=staff, title="Hello", content="First post").pk
    client.user_id = staff.pk
    return client


def assert_json_error(response, status: int) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    return body


OPERATIONS = operations_with_a_body()


@pytest.mark.parametrize("shape", NESTED)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_a_deeply_nested_json_body_is_a_400_not_a_500(staff_client, settings, method, path, shape):
    settings.DEBUG = True  # a 500 would be Django's HTML traceback: what `make run` answers
    # The limiter reads log-in bodies itself; this is the views' answer.
    settings.KESTREL_RATE_LIMITS = {}
    url = path.format(post_id=staff_client.post_id, user_id=staff_client.user_id)

    response = staff_client.generic(method, url, NESTED[shape], content_type="application/json")

    body = assert_json_error(response, 400)
    assert "nested too deeply" in body["error"]


@pytest.mark.parametrize("debug", [False, True])
def test_a_json_body_over_the_upload_limit_is_a_json_400(staff_client, settings, debug):
    settings.DEBUG = debug
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    body = '{"title": "Hi", "content": "' + "x" * 2_000 + '"}'

    response = staff_client.generic("POST", "/api/posts", body, content_type="application/json")

    assert assert_json_error(response, 400) == {"error": "Request body too large"}


@pytest.mark.parametrize("debug", [False, True])
def test_a_log_in_body_over_the_upload_limit_is_a_json_400(client, settings, debug):
    # The limiter reads this body first (request.body, Django's own size check).
    settings.DEBUG = debug
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000
    body = '{"email": "ada@example.com", "password": "' + "x" * 2_000 + '"}'

    response = client.generic("POST", "/api/login", body, content_type="application/json")

    assert assert_json_error(response, 400) == {"error": "Request body too large"}


def test_a_form_over_the_upload_limit_outside_the_api_gets_the_site_page(client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1_000

    response = client.post("/login", {"email": "ada@example.com", "password": "x" * 2_000})

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert "Request body too large" in response.content.decode()


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["/api/nope", "/api/posts/1/nope", "/api/posts/", "/api/", "/api/%E2%98%83"])
def test_an_unknown_api_path_is_a_json_404_for_every_method_with_debug_on(client, settings, method, path):
    # Django's DEBUG 404 page bypasses handler404: what a schema fuzzer meets under `make run`.
    settings.DEBUG = True

    response = client.generic(method, path)

    assert assert_json_error(response, 404) == {"error": "Not found"}
