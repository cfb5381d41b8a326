import pytest

pytestmark = pytest.mark.django_db


def test_healthz_is_200_when_redis_and_the_database_answer(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"redis_state", "redis_cache", "database"}
    assert all(check["ok"] for check in body["checks"].values())
    assert response["Cache-Control"].startswith("max-age=0")
