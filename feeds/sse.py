"""Server-Sent Events: one browser's live notifications, fed by a Redis subscription.

GET /api/notifications/stream subscribes first (503 if Redis cannot answer), replays
from the stream what came after Last-Event-ID, then relays live messages newer than the
last one sent. A lost subscription is retried with backoff, then replayed. A stream ends
after POLICY.max_age, on revocation (feeds.stream_access), token expiry or SIGTERM; a
process admits max_streams() of them (503 beyond), a person max_streams_per_user() (429).
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import FrameType

from django.conf import settings
from django.db import connections
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from redis import ConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.exceptions import AskError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from core import metrics
from core.http import error_response
from core.instrumentation import redis_client
from core.redis import (
    UNAVAILABLE_ERRORS,
    RedisClient,
    dedicated_pool,
    get_redis,
    is_cluster,
    is_unavailable,
    role_options,
)
from feeds import keys
from feeds.notifications import Notification, notifications_after, notifications_newest_id
from feeds.stream_access import StreamCredential, stream_lease_acquire, stream_lease_release
from feeds.stream_ids import stream_id_or_none, stream_id_or_raise

logger = logging.getLogger(__name__)

DEFAULT_MAX_STREAMS_PER_USER = 5  # across every process, when the setting is unset
# Of a worker's threads, streams may take at most this share, and must leave at least
# MIN_REQUEST_THREADS: the rest serve ordinary requests (and /healthz) whatever the streams do.
STREAM_THREAD_SHARE_MAX = 0.75
MIN_REQUEST_THREADS = 4


@dataclass(frozen=True)
class StreamPolicy:
    """Timings of every stream; tests replace POLICY (and `clock`) instead of sleeping."""

    retry_ms: int = 3000  # the browser's reconnection delay, sent first on every stream
    keepalive: float = 15.0  # seconds without a write before a keep-alive comment
    max_age: float = 300.0  # seconds a stream lives; then the browser reconnects
    poll: float = 1.0  # longest single wait, so stop, shutdown and deadlines are seen within it
    resubscribe_min: float = 0.1  # seconds before the first resubscribe attempt after losing Redis,
    resubscribe_max: float = 5.0  # doubling up to this
    replay_batch: int = 100  # XRANGE COUNT per replay round trip
    busy_retry_after: int = 30  # seconds, Retry-After (and retry:) of the 503 when the process is full
    auth_check: float = 2.0  # seconds between re-checks of the stream's session or token
    lease: float = 30.0  # seconds a stream's per-person lease lasts unless refreshed
    lease_refresh: float = 10.0  # seconds between refreshes (several per lease: one may fail)
    person_busy_retry_after: int = 60  # seconds, Retry-After of the 429 when the person's cap is full
    # Ending streams (lifetime, shutdown): the browser is told to come back after a
    # random delay in this range, so a deploy does not bring every browser back at once.
    end_retry_ms: tuple[int, int] = (500, 5000)


POLICY = StreamPolicy()
# Seconds since the Unix epoch, read through this one name (patched in tests): wall time,
# not monotonic, because leases and token expiry are compared across hosts.
clock: Callable[[], float] = time.time

KEEPALIVE_COMMENT = ": keep-alive\n\n"


# The threads of this gunicorn worker as it really runs (a --threads flag included), set
# by config/gunicorn.py's post_worker_init; None outside gunicorn.
worker_threads: int | None = None


def max_streams() -> int:
    """The per-process cap: KESTREL_SSE_MAX_STREAMS, or when that is 0 (the default) half
    of the worker's threads."""
    configured = getattr(settings, "KESTREL_SSE_MAX_STREAMS", 0)
    if configured:
        return configured
    return (worker_threads or settings.KESTREL_GUNICORN_THREADS) // 2


def max_streams_per_user() -> int:
    """The per-person cap across every process: KESTREL_SSE_MAX_STREAMS_PER_USER."""
    return getattr(settings, "KESTREL_SSE_MAX_STREAMS_PER_USER", DEFAULT_MAX_STREAMS_PER_USER)


def thread_budget_error(*, threads: int, streams: int) -> str | None:
    """Why `streams` open streams could starve a worker of `threads` threads, or None."""
    allowed = min(math.floor(threads * STREAM_THREAD_SHARE_MAX), threads - MIN_REQUEST_THREADS)
    if streams <= allowed:
        return None
    return (
        f"KESTREL_SSE_MAX_STREAMS={streams} with {threads} threads per worker leaves ordinary requests "
        f"too few threads: at most {max(allowed, 0)} (three quarters, and {MIN_REQUEST_THREADS} threads "
        "left over); lower it or raise GUNICORN_THREADS"
    )


def format_event(notification: Notification) -> str:
    """One notification as an SSE event: `id:` its stream id, `data:` its JSON on one line
    (json.dumps escapes newlines)."""
    data = json.dumps(notification, separators=(",", ":"))
    return f"id: {notification['id']}\nevent: notification\ndata: {data}\n\n"


def _jittered(delay: float) -> float:
    """Between half and all of `delay`: after a Redis restart, every stream of every
    process resubscribes (and replays) at once without it."""
    return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - spreading load, not a secret  # nosec B311


def _end_chunk(reason: str, policy: StreamPolicy) -> str:
    """The last chunk of a stream: come back after a random delay in policy.end_retry_ms,
    so a deploy does not bring every browser back at once."""
    low, high = policy.end_retry_ms
    retry_ms = random.randint(low, high)  # noqa: S311 - spreading reconnects, not a secret  # nosec B311
    return f"retry: {retry_ms}\n: {reason}\n\n"


# --- The streams open in this process --------------------------------------------------------


class StreamRegistry:
    """Open streams of this process: the per-process cap, and closing them all on shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[EventStream] = set()
        self.closing = False

    def admit(self, stream: EventStream, limit: int) -> bool:
        with self._lock:
            if self.closing or len(self._open) >= limit:
                return False
            self._open.add(stream)
            return True

    def discard(self, stream: EventStream) -> None:
        with self._lock:
            self._open.discard(stream)

    def close_all(self) -> int:
        """Refuse new streams and ask every open one to end (each notices within POLICY.poll)."""
        with self._lock:
            self.closing = True
            open_streams = list(self._open)
        for stream in open_streams:
            stream.stop()
        return len(open_streams)

    def reopen(self) -> None:
        """Admit streams again (tests; a process that did not exit after close_all)."""
        with self._lock:
            self.closing = False

    def open_streams(self) -> list[EventStream]:
        with self._lock:
            return list(self._open)

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


streams = StreamRegistry()


def end_streams_on_sigterm() -> None:
    """Make SIGTERM end this process's streams before gunicorn's own graceful stop.

    Call it from gunicorn's `post_worker_init` hook (the worker's main thread, after the
    worker installed its handlers). Without it a stopping gthread worker waits the whole
    graceful_timeout for its streams, then drops them; with it they end within
    POLICY.poll, telling browsers to reconnect (elsewhere) after a random short delay.
    """
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        streams.close_all()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, handler)


# --- Subscriptions -------------------------------------------------------------------------------

# A pub/sub message's type: a confirmed subscription, or a message published, on one
# server (SUBSCRIBE) or as shard channels on a cluster (SSUBSCRIBE).
SUBSCRIBED = frozenset({"subscribe", "ssubscribe"})
PUBLISHED = frozenset({"message", "smessage"})

_pool_lock = threading.Lock()
_pool: ConnectionPool | None = None


def _subscriber_pool(*, key: str | None = None) -> ConnectionPool:
    """A pool of the state role's apart from its shared one (core.redis.dedicated_pool), for
    subscriptions: on a cluster, of the node serving `key`'s slot."""
    return dedicated_pool(
        "state",
        key=key,
        socket_keepalive=True,
        # An idle subscription PINGs every 30 s, so a dead connection is found
        # (and the stream's MAX_AGE bounds how long a silent one can go unseen).
        health_check_interval=30,
        # No retries inside redis-py: a broken subscription must surface here, so the
        # stream replays what it missed after resubscribing.
        retry=Retry(NoBackoff(), 0),
        client_name="kestrel-sse",
    )


def _subscriber_client(state: RedisClient, user_id: int) -> Redis:
    """A client whose connections are only for subscriptions to `user_id`'s channels, on
    the state role (`state`, its client).

    Not the role's shared pool: every open stream holds a connection for minutes, and
    KESTREL_SSE_MAX_STREAMS of them would starve the process's ordinary requests (the
    shared pool blocks when empty). The stream cap bounds this pool instead. On one
    server, one such pool per process. On a cluster, a pool of the node that serves the
    person's slot (core.redis.dedicated_pool), where their shard channels live; a read
    in that slot through the role's client comes first, because redis-py refreshes that
    client's slot map when a node refuses or redirects a command, and a subscription
    made after a failover or a slot migration must find the slot's new node.
    """
    if is_cluster(state):
        state.exists(keys.user_notifications(user_id))
        return redis_client(connection_pool=_subscriber_pool(key=keys.user_channel(user_id)))
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _subscriber_pool()
        return redis_client(connection_pool=_pool)  # instrumented like every other client


class _SubscriptionMoved(RedisConnectionError):
    """Redis ended a sharded subscription by itself: its slot moved to another node."""


def _subscribe(user_id: int) -> PubSub:
    """Subscribe to the user's notification and control channels and wait for both confirmations.

    Once Redis has confirmed, every later PUBLISH reaches this connection; before, it
    may not, which is why the replay is read only after this returns. On a cluster they
    are shard channels (SSUBSCRIBE: the node of the person's slot hears them, and
    SPUBLISH sends them nowhere else).
    """
    state = get_redis("state")
    sharded = is_cluster(state)
    pubsub = _subscriber_client(state, user_id).pubsub(ignore_subscribe_messages=False)
    try:
        channels = {keys.user_channel(user_id).encode(), keys.user_stream_control(user_id).encode()}
        (pubsub.ssubscribe if sharded else pubsub.subscribe)(*channels)
        deadline = time.monotonic() + role_options("state")["SOCKET_TIMEOUT"]
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = pubsub.get_message(timeout=remaining)
            except AskError as exc:  # MOVED or ASK: the slot is on, or going to, another node
                # It moved after the role's client last looked: the next attempt finds its node.
                raise _SubscriptionMoved(f"The notification channels of user {user_id} moved: {exc}") from exc
            if message is not None and message["type"] in SUBSCRIBED:
                channels.discard(message["channel"])
                if not channels:
                    return pubsub
        raise RedisTimeoutError("Redis did not confirm the subscription")
    except BaseException:
        pubsub.close()
        raise


class _Ended(Exception):
    """The stream must end now; the argument is its final comment."""


class EventStream:
    """The body of one SSE response: an iterator of text chunks, and its clean-up.

    Django calls `close()` when the response ends for any reason (finished, client
    gone, server stopping), even if it was never iterated; it releases the
    subscription, the process slot and the person's lease.
    """

    def __init__(
        self,
        *,
        credential: StreamCredential,
        last_event_id: str | None,
        registry: StreamRegistry,
        policy: StreamPolicy,
        clock: Callable[[], float],
        client_socket: socket.socket | None = None,
    ) -> None:
        self.user_id = credential.user_id
        self._client_socket = client_socket
        self.id = uuid.uuid4().hex  # its member in the person's leases
        self._credential = credential
        self._last_event_id = last_event_id  # where the browser asked to resume, checked by the view
        self._cursor = "0-0"  # the newest notification the browser has: open() sets it
        self._registry = registry
        self._policy = policy
        self._clock = clock
        self._stop = threading.Event()
        self._pubsub: PubSub | None = None
        self._replay_needed = True
        self._release_lock = threading.Lock()
        self._released = False
        self._leased = False
        self._next_check = self._next_lease = 0.0
        self._chunks = self._generate()

    # --- life cycle ---

    def lease(self) -> bool:
        """Take one of the person's stream slots (False when all are taken); raises when
        Redis does not answer."""
        self._leased = stream_lease_acquire(
            user_id=self.user_id,
            stream_id=self.id,
            now=self._clock(),
            lease=self._policy.lease,
            cap=max_streams_per_user(),
        )
        return self._leased

    def open(self) -> None:
        """Subscribe before the response starts (raises when Redis does not answer)."""
        # Read before subscribing: anything newer is then replayed or received live.
        newest = notifications_newest_id(user_id=self.user_id) or "0-0"
        resume = self._last_event_id
        if resume is None or stream_id_or_raise(resume) > stream_id_or_raise(newest):
            # A new browser starts from now. An id past the newest one (the largest id
            # there is, a clock ahead) would replay nothing, then drop every live
            # notification as already seen: it starts from now too.
            resume = newest
        self._cursor = resume
        self._pubsub = _subscribe(self.user_id)
        metrics.incr("sse.opened")

    def stop(self) -> None:
        """Ask the stream to end; safe from any thread (shutdown, tests)."""
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        try:
            self._chunks.close()  # runs the generator's `finally` if it started
        except ValueError:
            return  # being iterated on another thread, which sees the stop flag and releases
        self._release()  # never started, or already released: both fine

    def _release(self) -> None:
        with self._release_lock:
            if self._released:
                return
            self._released = True
        self._drop_subscription()
        self._registry.discard(self)
        if self._leased:
            try:
                stream_lease_release(user_id=self.user_id, stream_id=self.id)
            except UNAVAILABLE_ERRORS as exc:
                logger.info("Stream lease of user %s left to expire (%s)", self.user_id, exc)
        metrics.incr("sse.closed")

    def _drop_subscription(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001, S110 - closing a broken connection may fail too  # nosec B110
                pass

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> str:
        return next(self._chunks)

    # --- the chunks ---

    def _generate(self) -> Generator[str]:
        """The stream's chunks until it ends: `retry:`, then replays, live events and
        keep-alives. Redis going away keeps the stream open: it resubscribes with backoff
        and jitter, then replays; the `finally` releases everything."""
        policy, clock = self._policy, self._clock
        try:
            now = clock()
            deadline = now + policy.max_age
            next_keepalive = now + policy.keepalive
            next_attempt, backoff = now, policy.resubscribe_min
            self._next_check, self._next_lease = now + policy.auth_check, now + policy.lease_refresh
            yield f"retry: {policy.retry_ms}\n\n"
            while not self._stop.is_set():
                now = clock()
                # Before the lifetime: a client whose token expired must fetch a new one first.
                ended = self._ended(now)
                if ended:
                    yield f": {ended}\n\n"
                    return
                if now >= deadline:
                    yield _end_chunk("This stream has reached its lifetime; reconnect with Last-Event-ID.", policy)
                    return
                chunk = ""
                if self._pubsub is None and now >= next_attempt:
                    try:
                        self._pubsub = _subscribe(self.user_id)
                    except UNAVAILABLE_ERRORS as exc:
                        next_attempt, backoff = now + _jittered(backoff), min(backoff * 2, policy.resubscribe_max)
                        logger.info("Notification stream of user %s: resubscribe failed (%s)", self.user_id, exc)
                    else:
                        self._replay_needed = True
                        backoff = policy.resubscribe_min
                        metrics.incr("sse.resubscribed")
                if self._pubsub is None:
                    # Waiting to resubscribe: keep-alives go on, so the browser stays.
                    self._stop.wait(min(policy.poll, max(0.0, min(next_attempt, next_keepalive) - now)))
                else:
                    wait = min(policy.poll, max(0.0, min(next_keepalive, deadline) - now))
                    try:
                        chunk = self._replay() if self._replay_needed else self._receive(self._pubsub, wait)
                    except _Ended as exc:
                        metrics.incr("sse.revoked")
                        yield f": {exc.args[0]}\n\n"
                        return
                    except UNAVAILABLE_ERRORS as exc:
                        self._drop_subscription()
                        now = clock()
                        next_attempt, backoff = now + _jittered(backoff), min(backoff * 2, policy.resubscribe_max)
                        metrics.incr("sse.subscription_lost")
                        logger.warning("Notification stream of user %s lost Redis (%s)", self.user_id, exc)
                        chunk = ": Redis is unavailable; resubscribing\n\n"
                now = clock()
                if not chunk and now >= next_keepalive:
                    chunk = KEEPALIVE_COMMENT
                if chunk:
                    yield chunk
                    next_keepalive = clock() + policy.keepalive
            yield _end_chunk("The server is closing this stream; reconnect with Last-Event-ID.", policy)
        finally:
            self._release()

    def _ended(self, now: float) -> str | None:
        """Why the stream must end now (its credential expired or was revoked, its lease
        lost), or None. Runs the timed checks that are due: one Redis round trip each."""
        if _client_gone(self._client_socket):
            # A page left (navigated, closed): without this its stream, and the person's
            # lease, would stay until a keep-alive write failed, 15 to 30 s later.
            metrics.incr("sse.client_gone")
            return "The client has gone."
        expires_at = self._credential.expires_at
        if expires_at is not None and now >= expires_at:
            return "The access token has expired; reconnect with a fresh one."
        if self._pubsub is None:
            return None  # Redis is away: nothing can be checked, and nothing is delivered either
        try:
            if now >= self._next_check:
                self._next_check = now + self._policy.auth_check
                if not self._credential.still_valid():
                    metrics.incr("sse.revoked")
                    return self._credential.ended_comment
            if now >= self._next_lease:
                self._next_lease = now + self._policy.lease_refresh
                if not self.lease():
                    # Its lease ran out (Redis was away longer than a lease) and others took the slots.
                    return "Too many open notification streams for this account."
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # Redis is down, not the credential: the subscription loop copes, and a
            # stream without Redis delivers nothing meanwhile.
        return None

    def _replay(self) -> str:
        """Everything in the stream after the cursor, as events (reads until caught up)."""
        chunks = []
        while True:
            batch = notifications_after(user_id=self.user_id, after=self._cursor, count=self._policy.replay_batch)
            for notification in batch:
                chunks.append(format_event(notification))
                self._cursor = notification["id"]
            if len(batch) < self._policy.replay_batch:
                break
        self._replay_needed = False
        if chunks:
            metrics.incr("sse.replayed", len(chunks))
        return "".join(chunks)

    def _receive(self, pubsub: PubSub, timeout: float) -> str:
        """The next live event ("" for none within `timeout`); raises _Ended on a control
        message that revokes this stream's credential."""
        message = pubsub.get_message(timeout=timeout)
        if message is None:
            return ""
        if message["type"] in SUBSCRIBED:
            # redis-py reconnected and resubscribed by itself: what was published
            # while it was away is only in the stream.
            self._replay_needed = True
            return ""
        if message["type"] == "sunsubscribe":
            # Never asked for: Redis drops a slot's shard subscriptions when the slot
            # leaves the node. Resubscribing finds its new node, then replays.
            raise _SubscriptionMoved(f"The notification channels of user {self.user_id} left their node")
        if message["type"] not in PUBLISHED:
            return ""
        if message["channel"] == keys.user_stream_control(self.user_id).encode():
            try:
                control = json.loads(message["data"])
            except ValueError:
                control = None
            if isinstance(control, dict) and self._credential.ended_by(control):
                raise _Ended(self._credential.ended_comment)
            return ""
        notification = _decode(message["data"])
        if notification is None:
            metrics.incr("sse.bad_message")
            logger.warning("Ignoring a malformed notification message %r", message["data"][:200])
            return ""
        if stream_id_or_raise(notification["id"]) <= stream_id_or_raise(self._cursor):
            metrics.incr("sse.duplicate")  # already sent by the replay
            return ""
        self._cursor = notification["id"]
        return format_event(notification)


def _client_gone(sock: socket.socket | None) -> bool:
    """Whether the client closed its connection, seen without writing (a peek at EOF).

    Only for gunicorn's plain sockets (`gunicorn.socket` in the WSGI environ): TLS
    sockets refuse recv flags, and other servers do not expose theirs.
    """
    if sock is None or type(sock) is not socket.socket:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False  # open, and the client sent nothing more: the usual case
    except OSError:
        return True  # reset or otherwise broken


def _decode(data: bytes) -> Notification | None:
    """A published message as a Notification; None for one that is not (never raises)."""
    try:
        payload = json.loads(data)
        notification: Notification = {
            "id": str(payload["id"]),
            "kind": str(payload["kind"]),
            "message": str(payload["message"]),
            "data": payload.get("data") if isinstance(payload.get("data"), dict) else {},
            "at": str(payload.get("at", "")),
        }
    except (ValueError, KeyError, TypeError):
        return None
    return notification if stream_id_or_none(notification["id"]) is not None else None


# --- The response ------------------------------------------------------------------------------


def stream_response(
    request: HttpRequest, *, credential: StreamCredential, last_event_id: str | None
) -> HttpResponseBase:
    """The SSE response for an authenticated user; 503 when this process is full, 429
    when the person already has their cap of streams open."""
    stream = EventStream(
        credential=credential,
        last_event_id=last_event_id,
        registry=streams,
        policy=POLICY,
        clock=clock,
        client_socket=request.META.get("gunicorn.socket"),
    )
    if not streams.admit(stream, max_streams()):
        metrics.incr("sse.rejected")
        return _busy(request, POLICY)
    try:
        if not stream.lease():
            stream.close()
            metrics.incr("sse.rejected_person")
            return _person_busy(request, POLICY)
        stream.open()
    except BaseException:
        stream.close()
        raise  # Redis unavailable: RedisUnavailableMiddleware answers 503

    # The stream holds this thread for minutes and needs no database: give the
    # connection back rather than keep one idle per open stream (PostgreSQL's
    # max_connections). Not inside a transaction (the tests' atomic blocks).
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()

    response = StreamingHttpResponse(stream, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each chunk on at once
    return response


def _busy(request: HttpRequest, policy: StreamPolicy) -> HttpResponse:
    message = (
        "Too many open notification streams on this server; "
        f"retry in {policy.busy_retry_after} s or poll GET /api/notifications."
    )
    return _refusal(request, 503, message, policy.busy_retry_after)


def _person_busy(request: HttpRequest, policy: StreamPolicy) -> HttpResponse:
    message = (
        f"You already have {max_streams_per_user()} notification streams open; close one, "
        f"retry in {policy.person_busy_retry_after} s or poll GET /api/notifications."
    )
    return _refusal(request, 429, message, policy.person_busy_retry_after)


def _refusal(request: HttpRequest, status: int, message: str, retry_after: int) -> HttpResponse:
    if "text/event-stream" in request.headers.get("Accept", ""):
        response = HttpResponse(
            f"retry: {retry_after * 1000}\n: {message}\n\n",
            status=status,
            content_type="text/event-stream; charset=utf-8",
        )
        response["Cache-Control"] = "no-cache"
    else:
        response = error_response(request, status, message)
    response["Retry-After"] = str(retry_after)
    return response
