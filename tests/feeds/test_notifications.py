"""Notifications kept in the per-user stream: notify(), the list and mark-read API,
POST /api/notify, the notifications page. The live stream is in test_notifications_sse.py."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from core import metrics
from feeds import keys
from feeds.notifications import (
    MESSAGE_MAX_LENGTH,
    notification_list,
    notifications_mark_read,
    notify,
)
from feeds.stream_ids import stream_id_or_none
from tests.feeds.channels import Listener

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_api(make_user) -> APIClient:
    client = APIClient()
    client.force_login(make_user(username="root", is_staff=True))
    return client


def _send(user_id: int, n: int) -> list[str]:
    return [notify(user_id=user_id, kind="like", message=f"like #{i}", data={"postId": i}) for i in range(n)]


# --- notify() --------------------------------------------------------------------------------


def test_notify_appends_to_the_users_stream_and_publishes_the_same_id(ada, state_redis):
    listener = Listener(state_redis, keys.user_channel(ada.pk))
    try:
        stream_id = notify(user_id=ada.pk, kind="follow", message="Bo followed you", data={"userId": 2})

        message = listener.next()
    finally:
        listener.close()
    assert message is not None
    published = json.loads(message["data"])
    assert published["id"] == stream_id
    assert published["kind"] == "follow"
    assert published["message"] == "Bo followed you"
    assert published["data"] == {"userId": 2}
    [(entry_id, fields)] = state_redis.xrange(keys.user_notifications(ada.pk))
    assert entry_id.decode() == stream_id
    assert fields[b"kind"] == b"follow"
    assert json.loads(fields[b"data"]) == {"userId": 2}
    assert fields[b"at"].decode() == published["at"]


def test_the_stream_is_trimmed_to_about_its_maxlen(ada, state_redis):
    pipe = state_redis.pipeline(transaction=False)
    for i in range(keys.NOTIFICATIONS_MAXLEN + 300):
        pipe.xadd(keys.user_notifications(ada.pk), {"kind": "like", "message": f"{i}", "data": "{}", "at": ""})
    pipe.execute()

    notify(user_id=ada.pk, kind="like", message="one more")

    # MAXLEN ~ trims whole radix-tree nodes (100 entries by default): never below the maximum.
    length = state_redis.xlen(keys.user_notifications(ada.pk))
    assert keys.NOTIFICATIONS_MAXLEN <= length < keys.NOTIFICATIONS_MAXLEN + 100


def test_a_long_message_is_cut_and_a_bad_kind_is_a_bug(ada):
    stream_id = notify(user_id=ada.pk, kind="post", message="x" * (MESSAGE_MAX_LENGTH + 50))

    [item] = notification_list(user_id=ada.pk)["notifications"]
    assert item["id"] == stream_id
    assert len(item["message"]) == MESSAGE_MAX_LENGTH
    with pytest.raises(ValueError, match="kind"):
        notify(user_id=ada.pk, kind="Bad Kind", message="hi")


def test_notify_fails_open_when_redis_is_down(ada, redis_down):
    assert notify(user_id=ada.pk, kind="like", message="lost") is None
    assert metrics.value("notifications.lost", kind="like") == 1


# --- GET /api/notifications, POST /api/notifications/read -------------------------------------------


def test_the_list_is_newest_first_with_unread_flags(as_ada, ada):
    ids = _send(ada.pk, 3)

    body = as_ada.get("/api/notifications").json()

    assert [n["id"] for n in body["notifications"]] == ids[::-1]
    assert [n["message"] for n in body["notifications"]] == ["like #2", "like #1", "like #0"]
    assert all(n["unread"] for n in body["notifications"])
    assert body["unread"] == 3
    assert body["readUpTo"] is None
    assert body["next"] is None
    assert body["notifications"][0]["data"] == {"postId": 2}
    assert body["notifications"][0]["kind"] == "like"


def test_the_list_pages_with_count_and_before(as_ada, ada):
    ids = _send(ada.pk, 5)

    first = as_ada.get("/api/notifications?count=2").json()
    second = as_ada.get(f"/api/notifications?count=2&before={first['next']}").json()
    third = as_ada.get(f"/api/notifications?count=2&before={second['next']}").json()

    assert [n["id"] for n in first["notifications"]] == [ids[4], ids[3]]
    assert [n["id"] for n in second["notifications"]] == [ids[2], ids[1]]
    assert [n["id"] for n in third["notifications"]] == [ids[0]]
    assert third["next"] is None


@pytest.mark.parametrize("query", ["count=0", "count=101", "count=x", "before=yesterday", "before=1-2-3"])
def test_bad_list_parameters_are_400(as_ada, query):
    response = as_ada.get(f"/api/notifications?{query}")

    assert response.status_code == 400
    assert response.json()["error"] == "Invalid input"


# Cursors Redis would refuse: digits of another script (int() reads them), a part past
# 64 bits, surrounding spaces. Each once reached Redis and came back as a 500.
_REFUSED_BY_REDIS = ["\u0661-\u0660", f"{2**64}-0", "99999999999999999999-0", " 1-0", "1-0\n"]


@pytest.mark.parametrize("cursor", _REFUSED_BY_REDIS)
def test_a_cursor_redis_would_refuse_is_400_not_a_server_error(as_ada, ada, cursor):
    _send(ada.pk, 1)

    listed = as_ada.get("/api/notifications", {"before": cursor})
    marked = as_ada.post("/api/notifications/read", {"upTo": cursor}, format="json")

    assert (listed.status_code, list(listed.json()["details"])) == (400, ["before"])
    assert (marked.status_code, list(marked.json()["details"])) == (400, ["upTo"])


@pytest.mark.parametrize("cursor", _REFUSED_BY_REDIS)
def test_stream_id_or_none_refuses_what_redis_would(cursor):
    assert stream_id_or_none(cursor) is None


def test_stream_id_or_none_takes_the_largest_id_redis_does():
    assert stream_id_or_none(f"{2**64 - 1}-{2**64 - 1}") == (2**64 - 1, 2**64 - 1)


@pytest.mark.parametrize("cursor", ["0-0", "00-000"])
def test_nothing_comes_before_the_first_possible_id(as_ada, ada, cursor):
    _send(ada.pk, 2)

    response = as_ada.get("/api/notifications", {"before": cursor})

    assert response.status_code == 200
    assert response.json() == {"notifications": [], "unread": 2, "readUpTo": None, "next": None}
    assert notification_list(user_id=ada.pk, before=cursor)["notifications"] == []


def test_the_page_shows_the_first_page_for_a_cursor_redis_would_refuse(client, ada):
    _send(ada.pk, 1)
    client.force_login(ada)

    response = client.get("/notifications", {"before": "\u0661-\u0660"})

    assert response.status_code == 200
    assert "like #0" in response.content.decode()


@pytest.mark.parametrize("query", ["before=", "count=5&count=6", "before=1-0&before=2-0"])
def test_an_empty_or_repeated_list_parameter_is_400(as_ada, query):
    response = as_ada.get(f"/api/notifications?{query}")

    assert response.status_code == 400
    assert response.json()["error"] == "Invalid input"


def test_marking_read_up_to_an_id(as_ada, ada):
    ids = _send(ada.pk, 3)

    response = as_ada.post("/api/notifications/read", {"upTo": ids[1]}, format="json")

    assert response.status_code == 200
    assert response.json() == {"readUpTo": ids[1], "unread": 1}
    flags = [n["unread"] for n in as_ada.get("/api/notifications").json()["notifications"]]
    assert flags == [True, False, False]


def test_marking_read_without_an_id_marks_everything(as_ada, ada):
    ids = _send(ada.pk, 3)

    response = as_ada.post("/api/notifications/read", {}, format="json")

    assert response.json() == {"readUpTo": ids[-1], "unread": 0}


def test_the_read_marker_never_moves_back_nor_past_the_newest(ada):
    ids = _send(ada.pk, 3)
    notifications_mark_read(user_id=ada.pk, up_to=ids[2])

    assert notifications_mark_read(user_id=ada.pk, up_to=ids[0]) == ids[2]  # another tab, older page
    future = f"{stream_id_or_none(ids[2])[0] + 10_000}-0"
    newer = notify(user_id=ada.pk, kind="like", message="new")
    assert notifications_mark_read(user_id=ada.pk, up_to=future) == newer  # not ahead of what exists
    assert notification_list(user_id=ada.pk)["unread"] == 0


def test_marking_read_with_nothing_to_mark(as_ada):
    assert as_ada.post("/api/notifications/read", {}, format="json").json() == {"readUpTo": None, "unread": 0}


def test_a_bad_read_marker_is_400(as_ada):
    response = as_ada.post("/api/notifications/read", {"upTo": "not-an-id"}, format="json")

    assert response.status_code == 400
    assert "upTo" in response.json()["details"]


def test_the_unread_count_stops_at_its_cap(as_ada, ada, state_redis):
    pipe = state_redis.pipeline(transaction=False)
    for i in range(150):
        pipe.xadd(keys.user_notifications(ada.pk), {"kind": "like", "message": f"{i}", "data": "{}", "at": ""})
    pipe.execute()

    assert as_ada.get("/api/notifications?count=1").json()["unread"] == 100


def test_the_list_needs_a_login():
    assert APIClient().get("/api/notifications").status_code == 401
    assert APIClient().post("/api/notifications/read", {}, format="json").status_code == 401


def test_everyone_sees_only_their_own_list(as_ada, ada, make_user):
    bo = make_user(username="bo")
    notify(user_id=bo.pk, kind="like", message="for bo")

    assert as_ada.get("/api/notifications").json()["notifications"] == []


def test_the_list_answers_503_when_redis_is_down(as_ada, redis_down):
    response = as_ada.get("/api/notifications")

    assert response.status_code == 503
    assert response["Retry-After"]


# --- POST /api/notify ----------------------------------------------------------------------------


def test_staff_can_notify_anyone(staff_api, ada):
    response = staff_api.post("/api/notify", {"userId": ada.pk, "message": "  Maintenance at noon  "}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["sent"] is True
    [item] = notification_list(user_id=ada.pk)["notifications"]
    assert item["id"] == body["id"]
    assert item["kind"] == "message"
    assert item["message"] == "Maintenance at noon"


def test_notify_is_staff_only(as_ada, ada, make_user):
    bo = make_user(username="bo")

    response = as_ada.post("/api/notify", {"userId": bo.pk, "message": "hi"}, format="json")

    assert response.status_code == 403
    assert response.json() == {"error": "Only staff can send notifications"}
    assert notification_list(user_id=bo.pk)["notifications"] == []


def test_notify_needs_a_login(ada):
    response = APIClient().post("/api/notify", {"userId": ada.pk, "message": "hi"}, format="json")

    assert response.status_code == 401


def test_notify_an_unknown_user_is_404(staff_api):
    response = staff_api.post("/api/notify", {"userId": 999_999, "message": "hi"}, format="json")

    assert response.status_code == 404
    assert response.json() == {"error": "User not found"}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"message": "hi"}, "userId"),
        ({"userId": "abc", "message": "hi"}, "userId"),
        ({"userId": 0, "message": "hi"}, "userId"),
        ({"userId": 1}, "message"),
        ({"userId": 1, "message": "   "}, "message"),
        ({"userId": 1, "message": "x" * (MESSAGE_MAX_LENGTH + 1)}, "message"),
        # Once coerced and sent: the schema says integer and string.
        ({"userId": "1", "message": "hi"}, "userId"),
        ({"userId": 1.0, "message": "hi"}, "userId"),
        ({"userId": 1, "message": 0}, "message"),
    ],
)
def test_notify_validates_its_input(staff_api, payload, field):
    response = staff_api.post("/api/notify", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()["details"]


def test_notify_answers_503_when_redis_cannot_take_it(staff_api, ada, monkeypatch):
    # The session must load (it lives in Redis too), so only the notification write fails.
    from redis.exceptions import ConnectionError as RedisConnectionError

    from feeds import notification_apis

    def down(**kwargs):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(notification_apis, "notification_create", down)

    response = staff_api.post("/api/notify", {"userId": ada.pk, "message": "hi"}, format="json")

    assert response.status_code == 503
    assert response["Retry-After"]


# --- The page and the badge ---------------------------------------------------------------------


def test_the_page_shows_notifications_and_marks_them_read(client, ada):
    ids = _send(ada.pk, 2)
    notifications_mark_read(user_id=ada.pk, up_to=ids[0])
    client.force_login(ada)

    response = client.get("/notifications")

    assert response.status_code == 200
    html = response.content.decode()
    assert html.index("like #1") < html.index("like #0")  # newest first
    assert f'data-id="{ids[1]}" data-kind="like"' in html
    assert html.count("notification unread") == 1  # what was new when the page was opened
    assert notification_list(user_id=ada.pk)["unread"] == 0
    assert response["Cache-Control"] == "no-store"


def test_the_page_escapes_messages(client, ada):
    notify(user_id=ada.pk, kind="message", message="<script>alert(1)</script>")
    client.force_login(ada)

    html = client.get("/notifications").content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_page_needs_a_login(client):
    response = client.get("/notifications")

    assert response.status_code == 302
    assert response["Location"].startswith("/login")


def test_logged_in_pages_carry_the_badge_and_the_live_client(client, ada):
    assert b"js/notifications.js" not in client.get("/").content

    client.force_login(ada)
    html = client.get("/").content.decode()

    assert 'id="notification-badge"' in html
    assert 'href="/notifications"' in html
    assert "js/notifications.js" in html


def test_notify_many_records_and_publishes_for_every_user(make_user, state_redis):
    from feeds import keys as feed_keys
    from feeds.notifications import notify_many

    users = [make_user() for _ in range(3)]
    listener = Listener(state_redis, *[feed_keys.user_channel(u.pk) for u in users])
    assert notify_many(user_ids=[u.pk for u in users], kind="post", message="New post") == 3

    assert all(state_redis.xlen(feed_keys.user_notifications(u.pk)) == 1 for u in users)
    received = [listener.next(timeout=2) for _ in users]
    listener.close()
    assert all(m is not None for m in received)
    assert {m["channel"] for m in received} == {feed_keys.user_channel(u.pk).encode() for u in users}
