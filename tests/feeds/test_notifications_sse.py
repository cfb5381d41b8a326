"""The live stream, GET /api/notifications/stream: real SSE responses read chunk by chunk
on a reader thread (as a browser would), real pub/sub, real streams, a real Redis restart.

Time inside the streams runs on a fake clock that the tests advance: keep-alives,
lifetimes and resubscribe backoff need no sleeping. Every wait has a deadline.
"""

from __future__ import annotations

import http.client
import json
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest
from django.test import Client

from core import metrics
from core.redis import is_cluster
from feeds import keys, sse
from feeds.notifications import notification_list, notify
from tests.feeds.channels import subscribers as channel_subscribers

pytestmark = pytest.mark.django_db

STREAM = "/api/notifications/stream"
DEADLINE = 5.0  # seconds any single expectation may take


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()  # wall time, as sse.clock: leases and token expiry compare with it

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Item:
    kind: str  # "retry", "comment", "event", "end"
    text: str = ""
    retry: int | None = None
    id: str | None = None
    event: str | None = None
    data: dict = field(default_factory=dict)


class SSEReader:
    """Iterates one streaming response on its own thread and parses what arrives."""

    def __init__(self, response, stream: sse.EventStream) -> None:
        self.response = response
        self.stream = stream
        self.items: queue.Queue[Item] = queue.Queue()
        self.events: list[dict] = []  # every notification received, in order
        self.thread = threading.Thread(target=self._read, name="sse-test-reader", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buffer = ""
        try:
            for chunk in self.response.streaming_content:
                buffer += chunk.decode()
                *blocks, buffer = buffer.split("\n\n")
                for block in blocks:
                    self._parse(block)
        finally:
            self.items.put(Item("end"))

    def _parse(self, block: str) -> None:
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                self.items.put(Item("comment", text=line[1:].strip()))
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        if "retry" in fields:
            self.items.put(Item("retry", retry=int(fields["retry"][-1])))
        if "data" in fields:
            data = json.loads("\n".join(fields["data"]))
            assert data["id"] == fields["id"][-1]  # the SSE id is the notification's stream id
            self.events.append(data)
            self.items.put(Item("event", id=fields["id"][-1], event=fields["event"][-1], data=data))

    def next(self, kind: str, *, containing: str = "", timeout: float = DEADLINE) -> Item:
        """The next item of `kind` (others are skipped); fails at the deadline or the end."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                item = self.items.get(timeout=remaining)
            except queue.Empty:
                break
            if item.kind == kind and containing in item.text:
                return item
            if item.kind == "end":
                raise AssertionError(f"the stream ended while waiting for a {kind}")
        raise AssertionError(f"no {kind} {containing!r} within {timeout} s")

    def next_event(self, timeout: float = DEADLINE) -> dict:
        item = self.next("event", timeout=timeout)
        assert item.event == "notification"
        return item.data

    def nothing_more(self) -> bool:
        """True if no notification is waiting (other items are dropped)."""
        while True:
            try:
                item = self.items.get_nowait()
            except queue.Empty:
                return True
            if item.kind == "event":
                return False

    def close(self) -> None:
        self.stream.stop()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()


def open_stream(client: Client, **extra) -> SSEReader:
    before = set(sse.streams.open_streams())
    response = client.get(STREAM, **extra)
    assert response.status_code == 200, response.content
    [stream] = set(sse.streams.open_streams()) - before
    return SSEReader(response, stream)


def wait_until(predicate, timeout: float = DEADLINE) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def subscribers(state_redis, user_id: int) -> int:
    return channel_subscribers(state_redis, keys.user_channel(user_id))


@pytest.fixture(autouse=True)
def clock(monkeypatch) -> FakeClock:
    """Streams on a fake clock, polling their sockets every 20 ms; none left open after a test."""
    fake = FakeClock()
    monkeypatch.setattr(sse, "clock", fake)
    monkeypatch.setattr(sse, "POLICY", sse.StreamPolicy(poll=0.02, resubscribe_min=1.0, resubscribe_max=1.0))
    yield fake
    sse.streams.close_all()
    assert wait_until(lambda: len(sse.streams) == 0), "a stream was left open"
    sse.streams.reopen()
    assert not [t for t in threading.enumerate() if t.name == "sse-test-reader" and t.is_alive()]


# --- Delivery ------------------------------------------------------------------------------------


def test_a_notification_reaches_an_open_stream(ada, as_ada, state_redis):
    reader = open_stream(as_ada)
    assert reader.next("retry").retry == 3000  # first, before anything else
    assert subscribers(state_redis, ada.pk) == 1

    sent = notify(user_id=ada.pk, kind="like", message="Bo liked your post", data={"postId": 7})

    event = reader.next_event()
    assert event["id"] == sent
    assert event["kind"] == "like"
    assert event["message"] == "Bo liked your post"
    assert event["data"] == {"postId": 7}
    assert event["at"]
    reader.close()
    assert subscribers(state_redis, ada.pk) == 0
    assert len(sse.streams) == 0


def test_the_response_is_an_uncached_unbuffered_event_stream(as_ada):
    reader = open_stream(as_ada)

    assert reader.response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert reader.response["Cache-Control"] == "no-cache"
    assert reader.response["X-Accel-Buffering"] == "no"
    reader.close()


def test_several_notifications_arrive_in_order(ada, as_ada):
    reader = open_stream(as_ada)
    reader.next("retry")

    sent = [notify(user_id=ada.pk, kind="post", message=f"post {i}") for i in range(5)]

    assert [reader.next_event()["id"] for _ in sent] == sent
    reader.close()


# --- Replay: Last-Event-ID ---------------------------------------------------------------------


def test_a_reconnecting_browser_gets_what_it_missed_with_last_event_id(ada, as_ada, state_redis):
    reader = open_stream(as_ada)
    first = notify(user_id=ada.pk, kind="like", message="seen")
    assert reader.next_event()["id"] == first
    reader.close()

    # Between two connections nobody listens: pub/sub drops these, the stream keeps them.
    assert subscribers(state_redis, ada.pk) == 0
    missed = [notify(user_id=ada.pk, kind="like", message=f"missed {i}") for i in range(3)]

    again = open_stream(as_ada, HTTP_LAST_EVENT_ID=first)
    assert [again.next_event()["id"] for _ in missed] == missed
    live = notify(user_id=ada.pk, kind="like", message="live again")
    assert again.next_event()["id"] == live
    assert [e["id"] for e in reader.events + again.events] == [first, *missed, live]
    again.close()


def test_the_last_event_id_query_parameter_resumes_too(ada, as_ada):
    first = notify(user_id=ada.pk, kind="like", message="one")
    second = notify(user_id=ada.pk, kind="like", message="two")

    reader = open_stream(as_ada, data={"lastEventId": first})

    assert reader.next_event()["id"] == second
    reader.close()


def test_the_header_wins_over_the_query_parameter(ada, as_ada):
    # A browser reconnecting by itself keeps the URL it started with (?lastEventId=<old>)
    # and sends the newer Last-Event-ID header.
    ids = [notify(user_id=ada.pk, kind="like", message=f"n{i}") for i in range(3)]

    reader = open_stream(as_ada, data={"lastEventId": ids[0]}, HTTP_LAST_EVENT_ID=ids[1])

    assert reader.next_event()["id"] == ids[2]
    assert reader.nothing_more()
    reader.close()


def test_a_long_absence_is_replayed_in_full(ada, as_ada, state_redis):
    first = notify(user_id=ada.pk, kind="like", message="seen")
    missed = [notify(user_id=ada.pk, kind="like", message=f"missed {i}") for i in range(250)]  # > 2 batches

    reader = open_stream(as_ada, HTTP_LAST_EVENT_ID=first)

    assert [reader.next_event()["id"] for _ in missed] == missed
    reader.close()


def test_a_new_browser_without_last_event_id_gets_only_new_notifications(ada, as_ada):
    notify(user_id=ada.pk, kind="like", message="old")

    reader = open_stream(as_ada)
    new = notify(user_id=ada.pk, kind="like", message="new")

    assert reader.next_event()["id"] == new  # the old one would have come first
    reader.close()


def test_a_notification_both_replayed_and_published_is_sent_once(ada, as_ada):
    first = notify(user_id=ada.pk, kind="like", message="one")
    # Subscribed (the view waits for Redis to confirm) but not yet replayed: the next
    # notification lands in the subscription and in the replay.
    reader_response = as_ada.get(STREAM, HTTP_LAST_EVENT_ID=first)
    [stream] = sse.streams.open_streams()
    both = notify(user_id=ada.pk, kind="like", message="two")

    reader = SSEReader(reader_response, stream)
    assert reader.next_event()["id"] == both
    after = notify(user_id=ada.pk, kind="like", message="three")
    assert reader.next_event()["id"] == after
    assert [e["id"] for e in reader.events] == [both, after]
    assert metrics.value("sse.duplicate") == 1
    reader.close()


def test_a_malformed_last_event_id_is_400(as_ada):
    response = as_ada.get(STREAM, HTTP_LAST_EVENT_ID="yesterday")

    assert response.status_code == 400
    assert response.json() == {"error": "Last-Event-ID must be a notification id"}
    assert len(sse.streams) == 0


# --- Only one's own events ------------------------------------------------------------------------


def test_each_stream_sees_only_its_own_users_notifications(ada, as_ada, make_user):
    bo = make_user(username="bo")
    bo_client = Client()
    bo_client.force_login(bo)
    ada_reader, bo_reader = open_stream(as_ada), open_stream(bo_client)

    for_bo = notify(user_id=bo.pk, kind="follow", message="for bo")
    for_ada = notify(user_id=ada.pk, kind="follow", message="for ada")

    assert ada_reader.next_event()["id"] == for_ada
    assert bo_reader.next_event()["id"] == for_bo
    last_for_ada = notify(user_id=ada.pk, kind="follow", message="for ada again")
    assert ada_reader.next_event()["id"] == last_for_ada
    assert [e["id"] for e in ada_reader.events] == [for_ada, last_for_ada]
    assert [e["id"] for e in bo_reader.events] == [for_bo]
    ada_reader.close()
    bo_reader.close()


def test_replay_never_includes_another_users_notifications(ada, as_ada, make_user):
    bo = make_user(username="bo")
    mine = notify(user_id=ada.pk, kind="like", message="mine")
    notify(user_id=bo.pk, kind="like", message="not mine")
    also_mine = notify(user_id=ada.pk, kind="like", message="also mine")

    reader = open_stream(as_ada, HTTP_LAST_EVENT_ID=mine)

    assert reader.next_event()["id"] == also_mine
    assert reader.nothing_more()
    reader.close()


def test_asking_for_someone_elses_stream_is_403(as_ada, make_user):
    bo = make_user(username="bo")

    response = as_ada.get(STREAM, {"userId": bo.pk})

    assert response.status_code == 403
    assert response.json() == {"error": "You can only open your own notification stream"}
    assert len(sse.streams) == 0


def test_asking_for_ones_own_stream_by_id_is_fine(ada, as_ada):
    reader = open_stream(as_ada, data={"userId": ada.pk})
    reader.next("retry")
    reader.close()


def test_the_stream_needs_a_login():
    response = Client().get(STREAM)

    assert response.status_code == 401
    assert response.json() == {"error": "Not logged in"}
    assert len(sse.streams) == 0


def test_the_stream_is_get_only(as_ada):
    assert as_ada.post(STREAM).status_code == 405


def test_a_stream_ends_soon_after_its_session_does(as_ada, clock):
    reader = open_stream(as_ada)
    reader.next("retry")

    as_ada.logout()  # deletes the session in Redis
    clock.advance(sse.POLICY.keepalive)  # the session is checked with each keep-alive

    reader.next("comment", containing="session has ended")
    reader.next("end")
    assert wait_until(lambda: len(sse.streams) == 0)


# --- Keep-alive, lifetime, the per-process cap, shutdown ------------------------------------------


def test_an_idle_stream_sends_keep_alive_comments(as_ada, clock):
    reader = open_stream(as_ada)
    reader.next("retry")

    for _ in range(2):
        clock.advance(sse.POLICY.keepalive)
        assert reader.next("comment").text == "keep-alive"
    reader.close()


def test_a_stream_ends_at_its_lifetime_and_says_when_to_come_back(as_ada, clock, state_redis, ada):
    reader = open_stream(as_ada)
    reader.next("retry")

    clock.advance(sse.POLICY.max_age)

    retry = reader.next("retry").retry
    low, high = sse.POLICY.end_retry_ms
    assert low <= retry <= high
    reader.next("end")
    assert wait_until(lambda: len(sse.streams) == 0)
    assert subscribers(state_redis, ada.pk) == 0


def test_beyond_the_per_process_cap_the_answer_is_503_with_retry(as_ada, settings):
    settings.KESTREL_SSE_MAX_STREAMS = 2
    readers = [open_stream(as_ada), open_stream(as_ada)]

    browser = as_ada.get(STREAM, HTTP_ACCEPT="text/event-stream")
    api = as_ada.get(STREAM)

    assert browser.status_code == 503
    assert browser["Retry-After"] == "30"
    assert browser["Content-Type"].startswith("text/event-stream")
    assert b"retry: 30000\n" in browser.content
    assert api.status_code == 503
    assert api["Retry-After"] == "30"
    assert "Too many open notification streams" in api.json()["error"]
    assert metrics.value("sse.rejected") == 2

    readers[0].close()  # a slot frees up
    again = open_stream(as_ada)
    for reader in (readers[1], again):
        reader.close()


def test_a_response_never_read_still_frees_its_slot_and_subscription(ada, as_ada, state_redis):
    response = as_ada.get(STREAM)
    assert len(sse.streams) == 1
    assert subscribers(state_redis, ada.pk) == 1

    response.close()  # what the WSGI server does when the client is gone before the first write

    assert len(sse.streams) == 0
    assert subscribers(state_redis, ada.pk) == 0


def test_closing_all_streams_ends_them_and_refuses_new_ones(as_ada):
    readers = [open_stream(as_ada), open_stream(as_ada)]
    for reader in readers:
        reader.next("retry")

    assert sse.streams.close_all() == 2

    for reader in readers:
        reader.next("comment", containing="server is closing")
        reader.next("end")
    assert wait_until(lambda: len(sse.streams) == 0)
    assert as_ada.get(STREAM).status_code == 503
    for reader in readers:
        reader.close()


def test_sigterm_ends_the_streams_then_runs_the_workers_own_handler(as_ada):
    received = []
    original = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))  # gunicorn's, here
    try:
        sse.end_streams_on_sigterm()
        reader = open_stream(as_ada)
        reader.next("retry")

        signal.raise_signal(signal.SIGTERM)

        reader.next("comment", containing="server is closing")
        reader.next("end")
        assert received == [signal.SIGTERM]
        reader.close()
    finally:
        signal.signal(signal.SIGTERM, original)


# --- Redis going away ---------------------------------------------------------------------------------


def test_a_redis_restart_loses_nothing_the_stream_was_given(ada, as_ada, redis_server, state_redis, clock):
    reader = open_stream(as_ada)
    reader.next("retry")
    before = notify(user_id=ada.pk, kind="like", message="before the restart")
    assert reader.next_event()["id"] == before

    redis_server.stop()
    reader.next("comment", containing="Redis is unavailable")
    assert notify(user_id=ada.pk, kind="like", message="while Redis is down") is None  # never stored: lost, counted
    redis_server.start()

    # Redis is back (empty: the test server keeps nothing on disk), and this stream's
    # subscriber is still waiting out its backoff: nobody listens to the channel.
    assert subscribers(state_redis, ada.pk) == 0
    missed = [notify(user_id=ada.pk, kind="like", message=f"while unsubscribed {i}") for i in range(2)]
    assert all(missed)

    clock.advance(sse.POLICY.resubscribe_max)  # the backoff is over: resubscribe, replay

    assert [reader.next_event()["id"] for _ in missed] == missed
    assert subscribers(state_redis, ada.pk) == 1
    after = notify(user_id=ada.pk, kind="like", message="after resubscribing")
    assert reader.next_event()["id"] == after
    assert [e["id"] for e in reader.events] == [before, *missed, after]
    # The stream itself works again after the restart: it holds what was sent since.
    assert [n["id"] for n in notification_list(user_id=ada.pk)["notifications"]] == [after, *missed[::-1]]
    reader.close()


def test_a_killed_subscription_resubscribes_and_replays(ada, as_ada, state_redis, clock):
    reader = open_stream(as_ada)
    reader.next("retry")
    first = notify(user_id=ada.pk, kind="like", message="first")
    assert reader.next_event()["id"] == first

    # On a cluster the subscription is on the node of Ada's slot (shard channels).
    node = {"target_nodes": state_redis.get_node_from_key(keys.user_channel(ada.pk))} if is_cluster(state_redis) else {}
    [subscriber] = [c for c in state_redis.client_list(**node) if c["name"] == "kestrel-sse"]
    state_redis.client_kill_filter(_id=subscriber["id"], **node)  # a failover or a proxy dropping it
    reader.next("comment", containing="Redis is unavailable")
    missed = notify(user_id=ada.pk, kind="like", message="missed")
    clock.advance(sse.POLICY.resubscribe_max)

    assert reader.next_event()["id"] == missed
    assert [e["id"] for e in reader.events] == [first, missed]
    assert metrics.value("sse.resubscribed") == 1
    reader.close()


def test_keep_alives_go_on_while_redis_is_away(as_ada, redis_server, clock):
    reader = open_stream(as_ada)
    reader.next("retry")

    redis_server.stop()
    try:
        reader.next("comment", containing="Redis is unavailable")
        clock.advance(sse.POLICY.keepalive)
        assert reader.next("comment").text == "keep-alive"
    finally:
        redis_server.start()
    reader.close()


def test_opening_a_stream_while_redis_is_down_is_503(as_ada, redis_down):
    response = as_ada.get(STREAM)

    assert response.status_code == 503
    assert response["Retry-After"]
    assert len(sse.streams) == 0


# --- Over real HTTP ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_over_http_events_arrive_as_they_happen_and_a_gone_client_frees_its_thread(live_server, ada, clock):
    session = Client()
    session.force_login(ada)
    url = urlsplit(live_server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=DEADLINE)
    try:
        connection.request(
            "GET",
            STREAM,
            headers={"Cookie": f"sessionid={session.cookies['sessionid'].value}", "Accept": "text/event-stream"},
        )
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
        assert response.getheader("X-Accel-Buffering") == "no"
        assert response.readline() == b"retry: 3000\n"
        assert response.readline() == b"\n"

        sent = notify(user_id=ada.pk, kind="message", message="over the wire")

        assert response.readline() == f"id: {sent}\n".encode()
        assert response.readline() == b"event: notification\n"
        data = response.readline()
        assert data.startswith(b"data: ")
        assert json.loads(data[len("data: ") :])["message"] == "over the wire"
    finally:
        connection.close()

    # The server learns the client left when a write fails: the next keep-alives.
    def gone() -> bool:
        clock.advance(sse.POLICY.keepalive)
        return len(sse.streams) == 0

    assert wait_until(gone)
