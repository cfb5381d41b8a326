"""Traffic against a live Kestrel while something breaks, and what it proves afterwards.

The fault suites share this machinery:

- `Member`: a person with an account, made through Kestrel's own service.
- `Client`: one keep-alive HTTP connection with its cookies (session, CSRF) or a bearer
  token and its own client address (X-Forwarded-For, so per-address log-in limits count
  each person apart, as they would behind a proxy). Every request is timed and recorded.
- `Actor`: a thread that logs a member in (session or bearer) and then posts, likes,
  follows, reads, logs out and in again, until told to stop or its budget is spent.
- `Recorder`: every request's endpoint, status, timing; marks for the fault's start and
  end; per-endpoint figures (status counts, p50/p99/max latency, time to recover).
- `Ledger`: every write the clients saw acknowledged (posts, likes, follows, logouts,
  token revocations), checked afterwards: nothing acknowledged is lost, and nothing
  logged out or revoked comes back.
- `write_report`: JSON and a plain table per scenario into var/reliability/ (or
  $RELIABILITY_REPORTS), also printed.

Only the standard library's HTTP client: what the suites measure is Kestrel, so the
client must add nothing (no retries, no connection pool of its own).
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import math
import os
import random
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

from devstack.processes import HOST, PROJECT_ROOT
from devstack.report import format_table
from tests.live import LiveKestrel

# Seconds a client waits for an answer before it counts the request as hung. Longer
# than any bound the suites assert, so a hang shows as a latency, not as a client error.
CLIENT_TIMEOUT = 15.0
PASSWORD = "reliable-Kestrel-pass-42"
IDLE_RECONNECT = 1.0  # seconds a kept-alive connection may idle before a client opens a new one
# Seconds an actor waits after a failed log-in, doubling up to the maximum.
MIN_LOGIN_BACKOFF = 0.1
MAX_LOGIN_BACKOFF = 1.6

# Settings every fault scenario's stack runs with, on top of the production ones:
# - the general API limit (100 a minute per person), and the write and job limits,
#   would answer 429s to a client that sends a request every few milliseconds; the
#   limiter still runs, on every request;
# - one trusted proxy, so each actor's X-Forwarded-For is its address and the log-in
#   limits (per address and per account, unchanged) count each person apart.
TRAFFIC_ENV = {
    "RATE_LIMIT_API_PER_MINUTE": "1000000",
    "RATE_LIMIT_WRITES_PER_MINUTE": "1000000",
    "RATE_LIMIT_JOBS_PER_HOUR": "1000000",
    "RATE_LIMIT_TRUSTED_PROXIES": "1",
}


def reports_dir() -> Path:
    """Where the reports go: $RELIABILITY_REPORTS, else var/reliability/ at the project root."""
    folder = Path(os.environ.get("RELIABILITY_REPORTS") or PROJECT_ROOT / "var" / "reliability")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --- People ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    user_id: int
    email: str
    username: str
    password: str = PASSWORD


def create_members(site: LiveKestrel, count: int, *, prefix: str) -> list[Member]:
    """`count` people made through accounts.services.user_create, in one `manage.py shell`."""
    code = (
        "import json, os\n"
        "from accounts.services import user_create\n"
        "prefix, count, password = os.environ['LIVE_PREFIX'], int(os.environ['LIVE_COUNT']), os.environ['LIVE_PASS']\n"
        "ids = [user_create(email=f'{prefix}{n}@example.com', username=f'{prefix}{n}', password=password).pk"
        " for n in range(count)]\n"
        "print(json.dumps(ids))\n"
    )
    output = site.shell(code, env={"LIVE_PREFIX": prefix, "LIVE_COUNT": str(count), "LIVE_PASS": PASSWORD})
    ids = json.loads(output.strip().splitlines()[-1])
    return [Member(user_id=pk, email=f"{prefix}{n}@example.com", username=f"{prefix}{n}") for n, pk in enumerate(ids)]


def shell_json(site: LiveKestrel, code: str, **env: str) -> object:
    """Run Python in `manage.py shell` on the live stack; the JSON it printed last."""
    output = site.shell(code, env=env)
    return json.loads(output.strip().splitlines()[-1])


# --- Recording -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    endpoint: str  # method and path template, e.g. "POST /api/posts/{id}/like"
    status: int | None  # None: no answer (see `error`)
    error: str | None  # "timeout", "connection" when there was no answer
    started: float  # seconds since the recorder's origin
    ended: float
    ok: bool  # the status is one the endpoint answers when all is well
    bad_body: bool  # an error answer (4xx/5xx) without a JSON {"error": ...}

    @property
    def latency(self) -> float:
        return self.ended - self.started

    @property
    def outcome(self) -> str:
        return str(self.status) if self.status is not None else self.error or "error"


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted `values` (0.0 for none)."""
    if not values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(values)))
    return values[min(rank, len(values)) - 1]


@dataclass
class EndpointFigures:
    endpoint: str
    requests: int
    statuses: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    failed_during_fault: int  # answers outside the endpoint's normal set, sent in the fault window
    recovered_s: float | None  # fault end -> first normal answer to a request sent after it
    failures_after_recovery: int
    bad_bodies: int


class Recorder:
    """Every request of a scenario, from every thread; times in seconds since creation."""

    def __init__(self) -> None:
        self.origin = time.monotonic()
        self._lock = threading.Lock()
        self.samples: list[Sample] = []
        self.marks: dict[str, float] = {}

    def now(self) -> float:
        return time.monotonic() - self.origin

    def add(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)

    def mark(self, name: str) -> float:
        at = self.now()
        with self._lock:
            self.marks[name] = at
        return at

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def still_down(self, *, fault_start: float, fault_end: float) -> set[str]:
        """Endpoints that failed since `fault_start` and have not answered normally to a
        request sent after `fault_end`."""
        samples = self.snapshot()
        failed = {s.endpoint for s in samples if not s.ok and s.started >= fault_start}
        back = {s.endpoint for s in samples if s.ok and s.started >= fault_end}
        return failed - back

    def figures(self, *, fault: tuple[float, float] | None) -> list[EndpointFigures]:
        by_endpoint: dict[str, list[Sample]] = defaultdict(list)
        for sample in self.snapshot():
            by_endpoint[sample.endpoint].append(sample)
        result = []
        for endpoint in sorted(by_endpoint):
            samples = sorted(by_endpoint[endpoint], key=lambda s: s.started)
            latencies = sorted(s.latency for s in samples)
            recovered_s = None
            failed_during = after = 0
            if fault is not None:
                start, end = fault
                failed_during = sum(1 for s in samples if not s.ok and start <= s.started < end)
                if not any(not s.ok and s.started >= start for s in samples):
                    recovered_s = 0.0  # never down
                elif first_ok := next((s for s in samples if s.ok and s.started >= end), None):
                    recovered_s = max(0.0, first_ok.ended - end)
                    after = sum(1 for s in samples if not s.ok and s.started > first_ok.ended)
            result.append(
                EndpointFigures(
                    endpoint=endpoint,
                    requests=len(samples),
                    statuses=dict(sorted(Counter(s.outcome for s in samples).items())),
                    p50_ms=round(percentile(latencies, 0.50) * 1000, 1),
                    p99_ms=round(percentile(latencies, 0.99) * 1000, 1),
                    max_ms=round(latencies[-1] * 1000, 1),
                    failed_during_fault=failed_during,
                    recovered_s=None if recovered_s is None else round(recovered_s, 3),
                    failures_after_recovery=after,
                    bad_bodies=sum(1 for s in samples if s.bad_body),
                )
            )
        return result


# --- HTTP ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no answer
    data: object  # the JSON body, or None
    headers: Mapping[str, str]
    error: str | None = None


class Client:
    """One person's HTTP client: a keep-alive connection, cookies or a bearer token, an address.

    A request that gets no answer (timeout, reset) closes the connection; the next one
    opens a new connection, as a browser would.
    """

    def __init__(self, port: int, recorder: Recorder, *, address: str, timeout: float = CLIENT_TIMEOUT) -> None:
        self.port = port
        self.recorder = recorder
        self.address = address
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self.bearer: str | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._idle_since = 0.0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def headers(self, method: str) -> dict[str, str]:
        headers = {"X-Forwarded-For": self.address, "Accept": "application/json"}
        if self.bearer is not None:
            headers["Authorization"] = f"Bearer {self.bearer}"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
            if method not in ("GET", "HEAD") and "csrftoken" in self.cookies:
                headers["X-CSRFToken"] = self.cookies["csrftoken"]
        return headers

    def call(self, method: str, path: str, *, endpoint: str, ok: Iterable[int] = (200,), body: object = None) -> Answer:
        payload = None if body is None else json.dumps(body).encode()
        headers = self.headers(method)
        if payload is not None:
            headers["Content-Type"] = "application/json"
        started = self.recorder.now()
        if self._conn is not None and time.monotonic() - self._idle_since > IDLE_RECONNECT:
            # gunicorn closes a keep-alive connection idle for its keepalive (2 s): a request
            # sent just as it does would fail without ever reaching Kestrel.
            self.close()
        try:
            if self._conn is None:
                self._conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            self._conn.request(method, path, body=payload, headers=headers)
            response = self._conn.getresponse()
            content = response.read()
        except TimeoutError:
            self.close()
            return self._record(endpoint, started, error="timeout")
        except (OSError, http.client.HTTPException):
            self.close()
            return self._record(endpoint, started, error="connection")
        self._idle_since = time.monotonic()
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        self._take_cookies(response.headers.get_all("Set-Cookie") or [])
        try:
            data = json.loads(content) if content else None
        except ValueError:
            data = None
        answer = Answer(status=response.status, data=data, headers=dict(response.headers))
        ended = self.recorder.now()
        # The API's error format; /healthz answers its own document (which check failed).
        bad_body = (
            path.startswith("/api/")
            and response.status >= 400
            and not (isinstance(data, dict) and isinstance(data.get("error"), str))
        )
        self.recorder.add(
            Sample(
                endpoint=endpoint,
                status=response.status,
                error=None,
                started=started,
                ended=ended,
                ok=response.status in set(ok),
                bad_body=bad_body,
            )
        )
        return answer

    def _record(self, endpoint: str, started: float, *, error: str) -> Answer:
        self.recorder.add(
            Sample(
                endpoint=endpoint,
                status=None,
                error=error,
                started=started,
                ended=self.recorder.now(),
                ok=False,
                bad_body=False,
            )
        )
        return Answer(status=None, data=None, headers={}, error=error)

    def _take_cookies(self, headers: list[str]) -> None:
        for header in headers:
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value


# --- The ledger of acknowledged writes ----------------------------------------------------


@dataclass
class Ledger:
    """Writes whose success a client saw (2xx). Appends are atomic under the GIL."""

    posts: dict[int, int] = field(default_factory=dict)  # post id -> author id
    likes: set[tuple[int, int]] = field(default_factory=set)  # (user id, post id)
    follows: set[tuple[int, int]] = field(default_factory=set)  # (follower id, followee id)
    logouts: list[tuple[int, str]] = field(default_factory=list)  # (user id, session id that was ended)
    revocations: list[tuple[int, str, str]] = field(default_factory=list)  # (user id, access, refresh)
    jobs: dict[str, str] = field(default_factory=dict)  # job id -> kind

    def counts(self) -> dict[str, int]:
        return {
            "posts": len(self.posts),
            "likes": len(self.likes),
            "follows": len(self.follows),
            "logouts": len(self.logouts),
            "revocations": len(self.revocations),
            "jobs": len(self.jobs),
        }

    def post_ids(self) -> list[int]:
        return list(self.posts)


@dataclass
class LedgerCheck:
    """What the ledger check found; every list should be empty."""

    checked: dict[str, int]
    lost_posts: list[int] = field(default_factory=list)
    lost_likes: list[tuple[int, int]] = field(default_factory=list)
    lost_follows: list[tuple[int, int]] = field(default_factory=list)
    sessions_back: list[str] = field(default_factory=list)  # "user 3: 200 ..." for a logged-out session that works
    tokens_back: list[str] = field(default_factory=list)  # a revoked access or refresh token that works
    like_counts_short: list[str] = field(default_factory=list)  # the API shows fewer likes than were acknowledged
    # Not a problem, a fact to report: cached posts whose invalidation failed during the
    # fault (it waits in the database outbox) show an old likeCount until the outbox is
    # replayed (every minute, jobs/cron.py); the check replays it, as that job would.
    stale_until_replay: list[str] = field(default_factory=list)

    @property
    def problems(self) -> dict[str, list]:
        informational = ("checked", "stale_until_replay")
        return {name: value for name, value in asdict(self).items() if name not in informational and value}

    @property
    def ok(self) -> bool:
        return not self.problems


def check_ledger(site: LiveKestrel, ledger: Ledger, recorder: Recorder) -> LedgerCheck:
    """Every acknowledged write, read back through the API and the database.

    Posts: `GET /api/posts/{id}` answers 200 with the right author. Likes and follows:
    the database has every one (one query), the API's likeCount and following lists
    show them. Logged-out sessions: `GET /api/me` with the old cookie is 401. Revoked
    tokens: `GET /api/me` with the access token and `POST /api/token/refresh` with the
    refresh token are 403.
    """
    result = LedgerCheck(checked=ledger.counts())
    checker = Client(site.port, recorder, address="10.255.255.254")
    try:
        for post_id, author_id in sorted(ledger.posts.items()):
            answer = checker.call("GET", f"/api/posts/{post_id}", endpoint="check GET /api/posts/{id}")
            author = answer.data.get("author") if isinstance(answer.data, dict) else None
            if answer.status != 200 or not isinstance(author, dict) or author.get("id") != author_id:
                result.lost_posts.append(post_id)
        likes_per_post = Counter(post_id for _, post_id in ledger.likes)

        def like_counts_short() -> list[str]:
            short = []
            for post_id, acknowledged in sorted(likes_per_post.items()):
                answer = checker.call("GET", f"/api/posts/{post_id}", endpoint="check GET /api/posts/{id}")
                shown = answer.data.get("likeCount") if isinstance(answer.data, dict) else None
                if not isinstance(shown, int) or shown < acknowledged:
                    short.append(f"post {post_id}: {shown} shown, {acknowledged} acknowledged")
            return short

        result.stale_until_replay = like_counts_short()
        if result.stale_until_replay:
            site.shell("from core.jobs import replay_invalidations\nprint(replay_invalidations())")
            # Each web process may still hold its copy in L1 for a moment.
            wait_until(lambda: not like_counts_short(), timeout=10, interval=0.5)
            result.like_counts_short = like_counts_short()
        following: dict[int, set[int]] = defaultdict(set)
        for follower, followee in ledger.follows:
            following[follower].add(followee)
        for follower, followees in sorted(following.items()):
            answer = checker.call(
                "GET", f"/api/users/{follower}/following?count=100", endpoint="check GET /api/users/{id}/following"
            )
            users = answer.data.get("users", []) if isinstance(answer.data, dict) else []
            listed = {user.get("id") for user in users if isinstance(user, dict)}
            for followee in sorted(followees - listed):
                result.lost_follows.append((follower, followee))
        for user_id, session_id in ledger.logouts:
            checker.cookies, checker.bearer = {"sessionid": session_id}, None
            answer = checker.call("GET", "/api/me", endpoint="check GET /api/me (logged-out session)", ok=(401,))
            if answer.status != 401:
                result.sessions_back.append(f"user {user_id}: {answer.status} {answer.data!r}")
        for user_id, access, refresh in ledger.revocations:
            checker.cookies, checker.bearer = {}, access
            answer = checker.call("GET", "/api/me", endpoint="check GET /api/me (revoked token)", ok=(403,))
            if answer.status != 403:
                result.tokens_back.append(f"user {user_id} access: {answer.status} {answer.data!r}")
            checker.bearer = None
            answer = checker.call(
                "POST",
                "/api/token/refresh",
                endpoint="check POST /api/token/refresh (revoked)",
                ok=(403,),
                body={"refresh": refresh},
            )
            if answer.status != 403:
                result.tokens_back.append(f"user {user_id} refresh: {answer.status} {answer.data!r}")
    finally:
        checker.close()

    # The database, in one query: likes and follows the API might hide behind a cache.
    stored = shell_json(
        site,
        "import json\n"
        "from accounts.models import Follow\n"
        "from posts.models import Like\n"
        "print(json.dumps({'likes': list(Like.objects.values_list('user_id', 'post_id')),"
        " 'follows': list(Follow.objects.values_list('follower_id', 'followee_id'))}))\n",
    )
    likes = {tuple(pair) for pair in stored["likes"]}
    follows = {tuple(pair) for pair in stored["follows"]}
    result.lost_likes = sorted(ledger.likes - likes)
    result.lost_follows = sorted(set(result.lost_follows) | (ledger.follows - follows))
    return result


# --- Actors ----------------------------------------------------------------------------------


class Budget:
    """A scenario's request budget, shared by its actors: every run stops by itself."""

    def __init__(self, requests: int) -> None:
        self.limit = requests
        self._taken = itertools.count(1)

    def take(self) -> bool:
        return next(self._taken) <= self.limit


@dataclass
class World:
    """What the actors of one scenario share."""

    port: int
    members: list[Member]
    recorder: Recorder
    ledger: Ledger
    budget: Budget
    stop: threading.Event = field(default_factory=threading.Event)
    pause: float = 0.01  # seconds between an actor's requests: room on two cores for the servers
    # Answers that mean Kestrel lost state it had acknowledged (a session that was never
    # logged out answering 401, a token never revoked answering 403), as text.
    surprises: list[str] = field(default_factory=list)


SESSION, BEARER = "session", "bearer"


class Actor(threading.Thread):
    """One member using the site through one client, by session cookie or bearer token.

    Logs in, then posts, likes others' posts, follows, reads, and now and then logs out
    (revoking its tokens, in bearer mode) and in again, `logins` times at most: the
    log-in limits (5 at once per account, then one a minute) stay out of the way.
    """

    def __init__(self, world: World, member: Member, *, mode: str, seed: int, logins: int = 4, address: str) -> None:
        super().__init__(name=f"actor-{member.username}-{mode}", daemon=True)
        self.world = world
        self.member = member
        self.mode = mode
        self.rng = random.Random(seed)
        self.logins_left = logins
        self.client = Client(world.port, world.recorder, address=address)
        self.logged_in = False
        self.refresh: str | None = None
        self.since_login = 0
        self.login_backoff = MIN_LOGIN_BACKOFF
        self.liked: set[int] = set()
        self.followed: set[int] = set()
        self.error: BaseException | None = None

    def endpoint(self, name: str) -> str:
        return f"{name} ({self.mode})"

    def run(self) -> None:
        try:
            while not self.world.stop.is_set() and self.world.budget.take():
                if not self.logged_in:
                    if not self.log_in():
                        self.world.stop.wait(self.login_backoff)
                        # Doubling, as a client should: every attempt counts against the
                        # log-in limits, and retrying ten times a second through an outage
                        # spends them (429s that outlast the outage).
                        self.login_backoff = min(self.login_backoff * 2, MAX_LOGIN_BACKOFF)
                    continue
                self.since_login += 1
                if self.logins_left > 0 and self.since_login > 25 and self.rng.random() < 0.05:
                    self.log_out()
                else:
                    action = self.rng.choices(
                        (self.post, self.like, self.follow, self.read, self.me, self.feed), weights=(3, 3, 1, 3, 2, 2)
                    )[0]
                    action()
                self.world.stop.wait(self.world.pause)
        except BaseException as exc:  # noqa: BLE001 - kept for the test to raise in its own thread
            self.error = exc
        finally:
            self.client.close()

    # Authentication ---------------------------------------------------------------------

    def log_in(self) -> bool:
        credentials = {"email": self.member.email, "password": self.member.password}
        self.client.cookies, self.client.bearer = {}, None
        # 429 is the log-in limits doing their job (per account and per address, left at
        # production values): a person who retried through an outage waits a minute.
        if self.mode == SESSION:
            answer = self.client.call(
                "POST", "/api/login", endpoint=self.endpoint("POST /api/login"), ok=(200, 429), body=credentials
            )
            self.logged_in = answer.status == 200 and "sessionid" in self.client.cookies
        else:
            answer = self.client.call(
                "POST", "/api/token", endpoint=self.endpoint("POST /api/token"), ok=(200, 429), body=credentials
            )
            if answer.status == 200 and isinstance(answer.data, dict):
                self.client.bearer, self.refresh = answer.data["access"], answer.data["refresh"]
                self.logged_in = True
        if self.logged_in:
            self.logins_left -= 1
            self.since_login = 0
            self.login_backoff = MIN_LOGIN_BACKOFF
        return self.logged_in

    def log_out(self) -> None:
        if self.mode == SESSION:
            session_id = self.client.cookies.get("sessionid", "")
            answer = self.client.call("POST", "/api/logout", endpoint=self.endpoint("POST /api/logout"), body={})
            if answer.status == 200:
                self.world.ledger.logouts.append((self.member.user_id, session_id))
        else:
            access, refresh = self.client.bearer or "", self.refresh or ""
            answer = self.client.call(
                "POST", "/api/logout", endpoint=self.endpoint("POST /api/logout"), body={"refresh": refresh}
            )
            if answer.status == 200:
                self.world.ledger.revocations.append((self.member.user_id, access, refresh))
        if answer.status == 200 or answer.status is None:
            # Logged out, or perhaps (no answer): either way this session or token is
            # done with. Only the acknowledged ones are in the ledger.
            self.logged_in = False
            self.client.cookies, self.client.bearer, self.refresh = {}, None, None

    def _check_auth(self, answer: Answer) -> None:
        """A 401/403 for a session or token this actor never gave up is Kestrel losing state."""
        if answer.status in (401, 403) and self.logged_in:
            what = "session" if self.mode == SESSION else "token"
            self.world.surprises.append(
                f"{self.member.username}: {what} refused without a logout: {answer.status} {answer.data!r}"
            )
            self.logged_in = False

    # Writes and reads -------------------------------------------------------------------

    def post(self) -> None:
        n = self.rng.randrange(1_000_000)
        answer = self.client.call(
            "POST",
            "/api/posts",
            endpoint=self.endpoint("POST /api/posts"),
            ok=(201,),
            body={"title": f"{self.member.username} note {n}", "content": f"Written under load, number {n}."},
        )
        if answer.status == 201 and isinstance(answer.data, dict):
            self.world.ledger.posts[answer.data["id"]] = self.member.user_id
        self._check_auth(answer)

    def _others_post(self) -> int | None:
        candidates = [p for p, author in list(self.world.ledger.posts.items()) if author != self.member.user_id]
        return self.rng.choice(candidates) if candidates else None

    def like(self) -> None:
        post_id = self._others_post()
        if post_id is None or post_id in self.liked:
            return self.read()
        answer = self.client.call(
            "POST", f"/api/posts/{post_id}/like", endpoint=self.endpoint("POST /api/posts/{id}/like"), ok=(201, 409)
        )
        if answer.status == 201:
            self.world.ledger.likes.add((self.member.user_id, post_id))
        if answer.status in (201, 409):
            self.liked.add(post_id)
        self._check_auth(answer)
        return None

    def follow(self) -> None:
        others = [m.user_id for m in self.world.members if m.user_id != self.member.user_id]
        followee = self.rng.choice(others)
        if followee in self.followed:
            return self.me()
        answer = self.client.call(
            "POST",
            f"/api/users/{followee}/follow",
            endpoint=self.endpoint("POST /api/users/{id}/follow"),
            ok=(201, 409),
        )
        if answer.status == 201:
            self.world.ledger.follows.add((self.member.user_id, followee))
        if answer.status in (201, 409):
            self.followed.add(followee)
        self._check_auth(answer)
        return None

    def read(self) -> None:
        post_id = self._others_post()
        if post_id is None:
            return self.me()
        self.client.call("GET", f"/api/posts/{post_id}", endpoint=self.endpoint("GET /api/posts/{id}"))
        return None

    def me(self) -> None:
        self._check_auth(self.client.call("GET", "/api/me", endpoint=self.endpoint("GET /api/me")))

    def feed(self) -> None:
        self._check_auth(self.client.call("GET", "/api/feed", endpoint=self.endpoint("GET /api/feed")))


class Prober(threading.Thread):
    """GET /healthz every `interval` seconds: when the site says it is down and up again."""

    def __init__(self, world: World, *, interval: float = 0.25) -> None:
        super().__init__(name="prober", daemon=True)
        self.world = world
        self.interval = interval
        self.client = Client(world.port, world.recorder, address="10.255.255.253")

    def run(self) -> None:
        try:
            while not self.world.stop.is_set():
                self.client.call("GET", "/healthz", endpoint="GET /healthz")
                self.world.stop.wait(self.interval)
        finally:
            self.client.close()


class Traffic:
    """Actors (half by session, half by bearer token) and a health prober, started and stopped together."""

    def __init__(
        self,
        site: LiveKestrel,
        members: Sequence[Member],
        *,
        budget: int,
        seed: int,
        probe: bool = True,
        pause: float = 0.01,
        ledger: Ledger | None = None,
    ) -> None:
        self.recorder = Recorder()
        self.ledger = ledger or Ledger()
        self.world = World(
            port=site.port,
            members=list(members),
            recorder=self.recorder,
            ledger=self.ledger,
            budget=Budget(budget),
            pause=pause,
        )
        self.threads: list[threading.Thread] = []
        for n, member in enumerate(members):
            mode = SESSION if n % 2 == 0 else BEARER
            self.threads.append(
                Actor(self.world, member, mode=mode, seed=seed + n, address=f"10.9.{n // 250}.{n % 250 + 1}")
            )
        if probe:
            self.threads.append(Prober(self.world))

    @property
    def surprises(self) -> list[str]:
        return self.world.surprises

    def start(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop every thread; a request in flight finishes or times out (CLIENT_TIMEOUT) first."""
        self.world.stop.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT + 5)
        stuck = [t.name for t in self.threads if t.is_alive()]
        if stuck:
            raise AssertionError(f"traffic threads did not stop: {stuck}")
        for thread in self.threads:
            if isinstance(thread, Actor) and thread.error is not None:
                raise thread.error

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.world.stop.set()
        with contextlib.suppress(AssertionError):
            self.stop()


def wait_until(condition: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass
class FaultWindow:
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def as_tuple(self) -> tuple[float, float]:
        return self.start, self.end


def run_fault(
    traffic: Traffic,
    *,
    inject: Callable[[], None],
    heal: Callable[[], None],
    hold: float,
    warm_requests: int = 100,
    recovery_timeout: float = 30.0,
    tail: float = 3.0,
) -> FaultWindow:
    """Warm up, break something for `hold` seconds, heal it, wait until every endpoint recovered.

    After healing, traffic runs until every endpoint that failed has answered normally
    to a request sent after the fault's end (or `recovery_timeout`), then `tail` seconds
    more, to catch an endpoint that fails again after recovering.
    """
    recorder = traffic.recorder
    if not wait_until(lambda: len(recorder.snapshot()) >= warm_requests, timeout=30):
        raise AssertionError(f"the traffic did not warm up: {Counter(s.outcome for s in recorder.snapshot())}")
    start = recorder.mark("fault_start")
    inject()
    try:
        # The fault's length is the scenario itself: there is nothing to wait on but the clock.
        wait_until(lambda: recorder.now() >= start + hold, timeout=hold + 1, interval=0.02)
    finally:
        heal()
    end = recorder.mark("fault_end")
    wait_until(
        lambda: not recorder.still_down(fault_start=start, fault_end=end), timeout=recovery_timeout, interval=0.1
    )
    recorder.mark("recovered")
    tail_end = recorder.now() + tail
    wait_until(lambda: recorder.now() >= tail_end, timeout=tail + 1, interval=0.1)
    traffic.stop()
    return FaultWindow(start=start, end=end)


# --- Reports ---------------------------------------------------------------------------------


def figures_table(figures: Sequence[EndpointFigures], *, fault: bool = True) -> str:
    """The per-endpoint table; `fault=False` leaves out the columns about a fault."""
    rows = [
        [
            f.endpoint,
            str(f.requests),
            " ".join(f"{status}:{count}" for status, count in f.statuses.items()),
            f"{f.p50_ms:.0f}",
            f"{f.p99_ms:.0f}",
            f"{f.max_ms:.0f}",
            str(f.failed_during_fault),
            "-" if f.recovered_s is None else f"{f.recovered_s:.2f}",
            str(f.failures_after_recovery),
        ]
        for f in figures
    ]
    headers = [
        "endpoint",
        "requests",
        "statuses",
        "p50 ms",
        "p99 ms",
        "max ms",
        "failed in fault",
        "recover s",
        "fails after",
    ]
    if not fault:
        headers, rows = headers[:6], [row[:6] for row in rows]
    return format_table(headers, rows, left=3)


_ACCESS_LINE = re.compile(r'^\S+ - - \[[^]]+\] "[A-Z]+ ')


_LOG_ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")


def save_logs(site: LiveKestrel, name: str) -> list[str]:
    """Write the web server's, worker's and scheduler's logs (without gunicorn's access
    lines) to `<name>.log`; return each 500's request and the exception that caused it."""
    parts, server_errors = [], []
    for log in sorted(site.var_dir.glob("*.log")):
        lines = [line for line in log.read_text(errors="replace").splitlines() if not _ACCESS_LINE.match(line)]
        parts.append(f"--- {log.name} ({len(lines)} lines)\n" + "\n".join(lines))
        for n, line in enumerate(lines):
            if "Internal Server Error:" not in line:
                continue
            entry = itertools.takewhile(lambda text: not _LOG_ENTRY.match(text), lines[n + 1 :])
            raised = [text for text in entry if re.match(r"^[\w.]+(Error|Exception)\b", text)]
            server_errors.append(f"{line.split('Internal Server Error:')[1].strip()}: {' <- '.join(raised[::-1])}")
    (reports_dir() / f"{name}.log").write_text("\n".join(parts) + "\n")
    return server_errors


def write_report(name: str, report: dict, *, table: str) -> Path:
    """`<name>.json` and `<name>.txt` in reports_dir(); the text is printed too."""
    folder = reports_dir()
    (folder / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    path = folder / f"{name}.txt"
    path.write_text(table + "\n")
    print(f"\n{table}\n(report: {path})")
    return path


def scenario_report(
    name: str,
    *,
    title: str,
    traffic: Traffic,
    fault: FaultWindow | None,
    bounds: Mapping[str, float],
    settings: Mapping[str, str],
    ledger_check: LedgerCheck | None,
    extra: Mapping[str, object] | None = None,
    notes: Sequence[str] = (),
    site: LiveKestrel | None = None,
) -> ScenarioResult:
    """Figures per endpoint, the ledger's result and the scenario's facts, written and printed.

    With `site`, what its processes logged (tracebacks and warnings, not the access log)
    goes to `<name>.log` beside the report: the stack's own folder is gone once it stops.
    """
    server_errors = save_logs(site, name) if site is not None else []
    figures = [
        f
        for f in traffic.recorder.figures(fault=fault.as_tuple() if fault else None)
        if not f.endpoint.startswith("check ")
    ]
    report = {
        "scenario": name,
        "title": title,
        "fault": None
        if fault is None
        else {"start_s": round(fault.start, 3), "end_s": round(fault.end, 3), "seconds": round(fault.seconds, 3)},
        "bounds": dict(bounds),
        "settings": dict(settings),
        "endpoints": [asdict(f) for f in figures],
        "ledger": traffic.ledger.counts(),
        "ledger_check": None if ledger_check is None else {"ok": ledger_check.ok, **asdict(ledger_check)},
        "surprises": list(traffic.surprises),
        "server_errors": server_errors,
        **dict(extra or {}),
    }
    lines = [f"{title}", ""]
    if fault is not None:
        lines.append(f"fault: {fault.seconds:.1f} s, from {fault.start:.1f} s to {fault.end:.1f} s of the run")
    lines.append("bounds: " + ", ".join(f"{k} {v:g}" for k, v in bounds.items()))
    lines.append("")
    lines.append(figures_table(figures))
    lines.append(
        "failed in fault: answers outside the endpoint's normal set to requests sent during the fault;"
        " recover s: from the fault's end to the first normal answer to a request sent after it (0: never failed);"
        " fails after: failures after that"
    )
    lines.append("")
    lines.append("acknowledged writes: " + ", ".join(f"{k} {v}" for k, v in traffic.ledger.counts().items()))
    if ledger_check is not None:
        verdict = "nothing lost, nothing came back" if ledger_check.ok else f"PROBLEMS {ledger_check.problems}"
        lines.append(f"ledger check: {verdict}")
        if ledger_check.stale_until_replay:
            lines.append(
                f"stale likeCount until the invalidation outbox was replayed: {len(ledger_check.stale_until_replay)}"
                f" posts, e.g. {ledger_check.stale_until_replay[:3]}"
            )
    if traffic.surprises:
        lines.append(f"surprises: {traffic.surprises}")
    lines.extend(f"500 answered to {error}" for error in server_errors)
    for key, value in (extra or {}).items():
        lines.append(f"{key}: {json.dumps(value, default=str)}")
    lines.extend(notes)
    path = write_report(name, report, table="\n".join(lines))
    return ScenarioResult(figures=figures, path=path, server_errors=server_errors)


@dataclass
class ScenarioResult:
    figures: list[EndpointFigures]
    path: Path
    server_errors: list[str]  # each 500: its request and its exceptions, from the web log


# --- Bounds and the checks every fault scenario makes -----------------------------------------

# Time a loaded two-core machine may add to any request (gunicorn, two Redis servers,
# the worker and these clients share the cores, and other work may run beside them).
CPU_MARGIN = 2.5
# Log-in endpoints hash the password (PBKDF2, ~0.3 s alone; up to ~5 s seen under this load).
PASSWORD_ENDPOINTS = ("POST /api/login", "POST /api/token")
PASSWORD_ALLOWANCE = 5.0
# Seconds from the fault's end within which every endpoint must answer normally again.
RECOVERY_BOUND = 5.0


@dataclass(frozen=True)
class RoleTimeouts:
    """A Redis role's timeouts and retries, as the live stack's settings give them."""

    role: str
    connect: float
    socket: float
    retries: int

    @classmethod
    def of(cls, role: str) -> RoleTimeouts:
        from django.conf import settings

        from core.redis import ROLE_ALIASES

        options = settings.CACHES[ROLE_ALIASES[role]]["OPTIONS"]
        return cls(
            role=role,
            connect=float(options["SOCKET_CONNECT_TIMEOUT"]),
            socket=float(options["SOCKET_TIMEOUT"]),
            retries=options["CONNECTION_POOL_KWARGS"]["retry"].get_retries(),
        )

    @property
    def hung_call(self) -> float:
        """The longest one call waits on a server that never answers: a connect and a read,
        not retried; the role's breaker makes the process's other calls fail fast meanwhile."""
        return self.connect + self.socket

    @property
    def refused_call(self) -> float:
        """The longest one call spends on a server that refuses connections: its retries' backoffs."""
        from core.redis import RETRY_BACKOFF_BASE, RETRY_BACKOFF_CAP

        return sum(min(RETRY_BACKOFF_CAP, RETRY_BACKOFF_BASE * 2**n) for n in range(1, self.retries + 1))


def _password_allowance(endpoint: str) -> float:
    return PASSWORD_ALLOWANCE if endpoint.startswith(PASSWORD_ENDPOINTS) else 0.0


def latency_bound(endpoint: str, fault_cost: float) -> float:
    """The slowest an endpoint may answer: what the fault costs one request, plus the machine's margin."""
    return fault_cost + CPU_MARGIN + _password_allowance(endpoint)


def recovery_bound(endpoint: str) -> float:
    return RECOVERY_BOUND + _password_allowance(endpoint)


def fault_problems(
    result: ScenarioResult,
    traffic: Traffic,
    *,
    fault_cost: float,
    must_fail: Iterable[str] = (),
    must_not_fail: Iterable[str] = (),
) -> list[str]:
    """Everything that went wrong, as sentences (empty: the scenario passed).

    Every scenario: no 5xx but 503, every error a JSON {"error"}, no request without an
    answer, each endpoint's slowest request within latency_bound(endpoint, fault_cost),
    every endpoint that failed answering normally again within RECOVERY_BOUND and not
    failing after, no session or token refused that was never given up. `must_fail`:
    parts of endpoint names ("(session)", "GET /healthz") each of which some endpoint the
    fault made fail must have (else the scenario did not test anything); `must_not_fail`:
    endpoints that must have answered normally throughout.
    """
    problems = []
    figures = result.figures
    by_name = {f.endpoint: f for f in figures}
    for f in figures:
        server_errors = {s: n for s, n in f.statuses.items() if s.isdigit() and int(s) >= 500 and s != "503"}
        if server_errors:
            problems.append(f"{f.endpoint}: server errors other than 503: {server_errors}")
        unanswered = {s: n for s, n in f.statuses.items() if not s.isdigit()}
        if unanswered:
            problems.append(f"{f.endpoint}: requests without an answer: {unanswered}")
        if f.bad_bodies:
            problems.append(f'{f.endpoint}: {f.bad_bodies} error answers without a JSON {{"error": ...}}')
        bound = latency_bound(f.endpoint, fault_cost)
        if f.max_ms > bound * 1000:
            problems.append(f"{f.endpoint}: slowest request {f.max_ms:.0f} ms, bound {bound * 1000:.0f} ms")
        if f.recovered_s is None:
            problems.append(f"{f.endpoint}: never answered normally after the fault")
        elif f.recovered_s > recovery_bound(f.endpoint):
            problems.append(
                f"{f.endpoint}: recovered {f.recovered_s:.2f} s after the fault, bound {recovery_bound(f.endpoint)} s"
            )
        if f.failures_after_recovery:
            problems.append(f"{f.endpoint}: {f.failures_after_recovery} failures after it had recovered")
    for part in must_fail:
        if not any(part in f.endpoint and f.failed_during_fault for f in figures):
            problems.append(f"no {part} endpoint failed during the fault: the fault did not reach them")
    for endpoint in must_not_fail:
        f = by_name.get(endpoint)
        if f is None:
            problems.append(f"{endpoint}: no requests")
        elif f.failed_during_fault or f.recovered_s != 0.0:
            problems.append(f"{endpoint}: failed during the fault: {f.statuses}")
    problems.extend(f"surprise: {s}" for s in traffic.surprises)
    problems.extend(f"500 answered to {error}" for error in result.server_errors)
    return problems
