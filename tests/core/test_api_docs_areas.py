"""The API docs group every operation into one area, in the order the docs list them,
and lead back to the site."""

from __future__ import annotations

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db

AREAS = [tag["name"] for tag in settings.SPECTACULAR_SETTINGS["TAGS"]]


@pytest.fixture(scope="module")
def schema(django_db_blocker) -> dict:
    from django.test import Client

    with django_db_blocker.unblock():
        response = Client().get("/api/schema", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def test_every_operation_sits_in_exactly_one_listed_area(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert len(operation["tags"]) == 1, (method, path)
            assert operation["tags"][0] in AREAS, (method, path, operation["tags"])
    assert [tag["name"] for tag in schema["tags"]] == AREAS


@pytest.mark.parametrize(
    ("path", "area"),
    [
        ("/api/token/refresh", "auth"),
        ("/api/posts/{post_id}/like", "posts"),
        ("/api/users/{user_id}/followers", "people"),
        ("/api/users/{user_id}/activity", "feed"),
        ("/api/notifications/stream", "notifications"),
        ("/api/reports/{job_id}", "jobs"),
    ],
)
def test_operations_are_filed_where_people_look_for_them(schema, path, area):
    assert {operation["tags"][0] for operation in schema["paths"][path].values()} == {area}


def test_the_docs_lead_back_to_the_site(schema):
    assert "[Back to the site](/)" in schema["info"]["description"]
