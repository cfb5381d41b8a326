"""Schema fuzzing: schemathesis runs every check of /api/schema against a live Kestrel.

The whole engine runs, as `schemathesis run` would: examples, coverage, fuzzing and
stateful phases (links inferred from the response schemas: a post created, then read,
liked, deleted and read again), with every check, among them response schema, status
code and content type conformance, negative and positive data, `ignored_auth`,
`use_after_free`, `ensure_resource_availability` and `object_level_authorization`
between two people, Ada and Bob, who must never see or change each other's private
objects (jobs, reports). A staff account is the third identity, for POST /api/notify.
That check replays reads only, so a last test sends Bob's writes to Ada's post and
profile with every shape of valid body, and his reads of her job and report.

Against tests/live.py's stack, not in process: schemathesis's WSGI transport fails the
auth probes (`ignored_auth`, object-level authorization) on a transport keyword werkzeug
does not take, so in process those checks would silently not run. The live stack is
production's: gunicorn gthread, both Redis roles, an RQ worker (email goes to files in
the stack's folder, so nothing leaves the machine), rate limiting on, with the general
API limit raised out of reach (one address sends thousands of requests a minute); the
log-in limits stay as they are, so log-in, sign-up and token requests soon answer 429,
which the schema documents.

Not fuzzed: GET /api/notifications/stream (Server-Sent Events): each request would hold
a stream open for minutes; tests/feeds/test_notifications_sse.py and
tests/feeds/test_notification_stream_access.py cover it.

Bounded: about three and a half minutes of fuzzing plus the stack's start-up. A run
prints its seed; `KESTREL_FUZZ_SEED=<seed>` replays it. The findings (or the all-clear)
also land in var/reliability/schema-fuzz.json.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from schemathesis.core.result import Ok
from schemathesis.engine import Status, events, from_schema

from tests.live import LiveKestrel, live_kestrel

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

REPORT = Path(__file__).resolve().parents[2] / "var" / "reliability" / "schema-fuzz.json"

# Seconds of fuzzing: operations one at a time (examples, coverage, fuzzing), then the
# stateful phase with a budget of its own (sharing one, it was sometimes left none),
# then the operations that end credentials. The engine shares each budget out between
# operations.
OPERATIONS_SECONDS = 120
STATEFUL_SECONDS = 50
ENDING_SECONDS = 25
# Error feedback reads 400 bodies as DRF's bare {"field": ["message"]} and so takes
# Kestrel's {"error", "details": {"field": [...]}} for a body with a required
# `details.field`: it then reports valid requests as accepted "negative" data. It
# shapes generation only; every check still runs.
FUZZING = {"error-feedback": {"enabled": False}}
SINGLE_OPERATIONS = {"stateful": {"enabled": False}, "fuzzing": FUZZING}
STATEFUL_ONLY = {name: {"enabled": False} for name in ("examples", "coverage", "fuzzing")}
# Examples per operation and phase, before the time limit cuts in.
MAX_EXAMPLES = 40
# An answer slower than this is a failure (max_response_time): a hung request, not a slow machine.
RESPONSE_SECONDS = 5.0

# They end the credentials the run authenticates with: logging out revokes the bearer
# token, logging out everywhere and changing the password revoke every token of the
# user. Fuzzed apart, each request as a fresh user with a fresh token.
ENDING_PATHS = ["/api/logout", "/api/logout-all", "/api/password"]
# Server-Sent Events (feeds.schema describes them): every request would hold a stream open for minutes.
STREAM_PATH = "/api/notifications/stream"

# Schema-valid requests that business rules refuse with 400, which no JSON Schema can
# say: a weak, common or username-like password, an email or username already taken;
# liking one's own post; following oneself. positive_data_acceptance takes 400 from these.
BUSINESS_RULE_400 = [
    ("/api/register", "POST"),
    ("/api/password", "POST"),
    ("/api/posts/{post_id}/like", "POST"),
    ("/api/users/{user_id}/follow", "POST"),
]
# Public reads: anyone may read anyone's post, profile, posts and stats. schemathesis's
# object_level_authorization would report Bob reading Ada's post as a bypass; what Bob
# must not do with them (change them) test_bob_neither_changes_nor_reads_what_is_adas checks.
PUBLIC_READS = [
    ("/api/posts/{post_id}", "GET"),
    ("/api/users/{user_id}", "GET"),
    ("/api/users/{user_id}/posts", "GET"),
    ("/api/users/{user_id}/stats", "GET"),
    ("/api/users/{user_id}/activity", "GET"),
    ("/api/users/{user_id}/followers", "GET"),
    ("/api/users/{user_id}/following", "GET"),
]
POSITIVE_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
NEGATIVE_REFUSED = ["400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428", "429", "5xx"]

# The live stack's settings over production's (tests/live.py): see the module docstring.
LIVE_ENV = {
    "RATE_LIMIT_API_PER_MINUTE": "100000000",
    "RATE_LIMIT_WRITES_PER_MINUTE": "1000000",
    "RATE_LIMIT_JOBS_PER_HOUR": "1000000",
    # Longer than the run, so the fixed tokens never expire under it.
    "JWT_ACCESS_LIFETIME": "3600",
}

PASSWORD = "a-Fuzzing-pass-42"
# Users made for the operations that end credentials: about one per generated request
# (hypothesis asks for credentials for examples it then discards too). Past the last,
# they come round again: a reused token may be revoked by then, which is a 403.
ENDING_USERS = 3000

_MAKE_USERS = """
import json, os
from accounts.services import user_create
from accounts.tokens import token_pair_issue
people = {}
for name, staff in (("ada", False), ("bob", False), ("staff", True)):
    user = user_create(email=f"{name}@example.com", username=name, password=os.environ["FUZZ_PASSWORD"], is_staff=staff)
    people[name] = {"id": user.pk, "access": token_pair_issue(user=user).access}
print(json.dumps(people))
"""

_AN_HOUR_PASSES = """
from datetime import timedelta
from django.db.models import F
from django.utils import timezone
from jobs.models import Job
from jobs.queues import QUOTA_WINDOW
jobs = Job.objects.filter(owner__email="{email}")
jobs.filter(completed_at=None).update(completed_at=timezone.now())
jobs.update(created_at=F("created_at") - timedelta(seconds=QUOTA_WINDOW))
"""

# Users in bulk (an unusable password: nobody logs in with one, and no hashing), each
# with a token of its own.
_MAKE_ENDING_USERS = """
import json
from django.contrib.auth.hashers import make_password
from accounts.models import User
from accounts.tokens import token_pair_issue
unusable = make_password(None)
users = User.objects.bulk_create(
    User(username=f"ending{n}", email=f"ending{n}@example.com", password=unusable) for n in range({count})
)
print(json.dumps([token_pair_issue(user=user).access for user in users]))
"""


@pytest.fixture(scope="module")
def site() -> Iterator[LiveKestrel]:
    with live_kestrel(env=LIVE_ENV) as live:
        yield live


@pytest.fixture(scope="module")
def people(site: LiveKestrel) -> dict:
    output = site.shell(_MAKE_USERS, env={"FUZZ_PASSWORD": PASSWORD})
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def seed() -> int:
    value = int(os.environ.get("KESTREL_FUZZ_SEED") or secrets.randbelow(2**31))
    print(f"\nschema fuzzing seed: {value} (KESTREL_FUZZ_SEED={value} replays it)")
    return value


def _config(
    site: LiveKestrel,
    *,
    seed: int,
    seconds: int,
    operations: list[dict],
    auth: dict | None = None,
    phases: dict | None = None,
):
    return schemathesis.Config.from_dict(
        {
            "base-url": site.base_url,
            "seed": seed,
            "max-time": seconds,
            # One at a time: with two, hypothesis's threads call ast.parse concurrently, which
            # Python 3.11 before 3.11.8 can fail with "AST constructor recursion depth mismatch".
            "workers": 1,
            "request-timeout": 30,
            # Nothing kept between runs, nothing written into the repository.
            "cache": {"enabled": False},
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": phases or {"fuzzing": FUZZING},
            "checks": {
                "max_response_time": RESPONSE_SECONDS,
                # A request line too long for gunicorn is refused too, with its 414.
                "negative_data_rejection": {"expected-statuses": NEGATIVE_REFUSED},
            },
            **({"auth": auth} if auth else {}),
            "operations": [
                *operations,
                *(
                    {
                        "include-path": path,
                        "include-method": method,
                        "checks": {"positive_data_acceptance": {"expected-statuses": [*POSITIVE_ACCEPTED, "400"]}},
                    }
                    for path, method in BUSINESS_RULE_400
                ),
                *(
                    {
                        "include-path": path,
                        "include-method": method,
                        "checks": {"object_level_authorization": {"enabled": False}},
                    }
                    for path, method in PUBLIC_READS
                ),
            ],
        }
    )


class Findings:
    """What a run did and found: cases, answers by status, failures by operation and check."""

    def __init__(self) -> None:
        self.cases = 0
        self.operations: set[str] = set()
        self.statuses: Counter[int] = Counter()
        self.identities: Counter[str] = Counter()
        self.failures: dict[tuple[str, str, str], list[str]] = defaultdict(list)
        # Engine errors (the run itself went wrong) by operation and kind, with one trace each.
        self.errors: dict[tuple[str, str], list] = {}
        self.phases: dict[str, str] = {}
        self.checks: Counter[str] = Counter()

    def collect(self, stream) -> None:
        for event in stream:
            if isinstance(event, events.ScenarioFinished):
                self._scenario(event.recorder)
            elif isinstance(event, events.PhaseFinished):
                reason = event.phase.skip_reason
                self.phases[event.phase.name.value] = str(event.status) + (f" ({reason.value})" if reason else "")
            elif isinstance(event, events.NonFatalError | events.FatalError):
                error = getattr(event, "value", None) or getattr(event, "exception", None)
                key = (getattr(event, "label", "run"), type(error).__name__)
                trace = "".join(traceback.format_exception(error)) if isinstance(error, BaseException) else repr(event)
                self.errors.setdefault(key, [0, trace])[0] += 1

    def _scenario(self, recorder) -> None:
        for node in recorder.cases.values():
            case = node.value
            self.cases += 1
            self.operations.add(case.operation.label)
            if case.auth_identity:
                self.identities[case.auth_identity] += 1
        for interaction in recorder.interactions.values():
            if interaction.response is not None:
                self.statuses[interaction.response.status_code] += 1
        for checks in recorder.checks.values():
            for check in checks:
                self.checks[check.name] += 1
                if check.status != Status.FAILURE or check.failure_info is None:
                    continue
                failure = check.failure_info.failure
                key = (failure.operation or recorder.label, check.name, failure.title)
                if len(self.failures[key]) < 3:  # a few samples of each are enough to act on
                    self.failures[key].append(f"{failure.message}\n{check.failure_info.code_sample}")

    def summary(self) -> dict:
        return {
            "cases": self.cases,
            "operations": sorted(self.operations),
            "statuses": {str(code): count for code, count in sorted(self.statuses.items())},
            "identities": dict(self.identities),
            "phases": self.phases,
            "checks": dict(sorted(self.checks.items())),
            "failures": [
                {"operation": operation, "check": check, "title": title, "samples": samples}
                for (operation, check, title), samples in sorted(self.failures.items())
            ],
            "errors": [
                {"operation": operation, "error": kind, "count": count, "trace": trace}
                for (operation, kind), (count, trace) in sorted(self.errors.items())
            ],
        }

    def explain(self) -> str:
        lines = [f"{len(self.failures)} kinds of failure, {len(self.errors)} errors:"]
        for (operation, check, title), samples in sorted(self.failures.items()):
            lines.append(f"- {operation}: {check}: {title}")
            lines.extend("    " + sample.replace("\n", "\n    ") for sample in samples[:1])
        for (operation, kind), (count, trace) in sorted(self.errors.items()):
            lines.append(f"- error in {operation}: {kind} x{count}\n    " + trace.replace("\n", "\n    "))
        return "\n".join(lines)


def _write_report(name: str, findings: Findings, **extra) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    report[name] = {**extra, **findings.summary()}
    REPORT.write_text(json.dumps(report, indent=2) + "\n")


def _schema_operations(schema) -> set[str]:
    operations = set()
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            raise AssertionError(f"schemathesis cannot read an operation of /api/schema: {result.err()}")
        operations.add(result.ok().label)
    return operations


@pytest.mark.parametrize(
    ("part", "seconds", "phases"),
    [("operations", OPERATIONS_SECONDS, SINGLE_OPERATIONS), ("stateful", STATEFUL_SECONDS, STATEFUL_ONLY)],
)
def test_the_api_keeps_its_schema_for_two_people_and_staff(site, people, seed, tmp_path, part, seconds, phases):
    # Web Fuzzing Commons auth: each person's bearer token as a fixed header. Ada and
    # Bob are peers: objects one of them reads (their jobs, their reports) are replayed
    # as the other, who must not get them.
    wfc = tmp_path / "auth.json"
    wfc.write_text(
        json.dumps(
            {
                "auth": [
                    {
                        "name": name,
                        "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {people[name]['access']}"}],
                    }
                    for name in ("ada", "bob", "staff")
                ]
            }
        )
    )
    config = _config(
        site,
        seed=seed,
        seconds=seconds,
        auth={"wfc": {"path": str(wfc), "peers": ["ada", "bob"]}},
        operations=[{"include-path": [*ENDING_PATHS, STREAM_PATH], "enabled": False}],
        phases=phases,
    )
    schema = schemathesis.openapi.from_url(site.url("/api/schema"), config=config)
    expected = _schema_operations(schema) - {f"POST {path}" for path in ENDING_PATHS} - {f"GET {STREAM_PATH}"}

    began = time.monotonic()
    findings = Findings()
    findings.collect(from_schema(schema).execute())
    _write_report(part, findings, seed=seed, seconds=round(time.monotonic() - began, 1))

    assert not findings.failures, f"{findings.explain()}\n\n{site.logs()}"
    assert not findings.errors, findings.explain()
    assert not [code for code in findings.statuses if code >= 500]
    if part == "stateful":
        assert findings.phases.get("stateful") == "success", findings.phases
    else:
        assert findings.operations >= expected, f"never exercised: {sorted(expected - findings.operations)}"
        assert {"ada", "bob"} <= set(findings.identities), f"identities used: {dict(findings.identities)}"


def test_the_operations_that_end_credentials_keep_their_schema(site, seed):
    # One fresh user and token per request: a logout, a log-out-everywhere or a password
    # change ends only its own user's tokens, never the next request's.
    output = site.shell(_MAKE_ENDING_USERS.replace("{count}", str(ENDING_USERS)))
    tokens = itertools.cycle(json.loads(output.strip().splitlines()[-1]))
    lock = threading.Lock()

    config = _config(
        site,
        seed=seed,
        seconds=ENDING_SECONDS,
        operations=[
            {"include-path": [path for path in _paths(site) if path not in ENDING_PATHS], "enabled": False},
        ],
    )
    schema = schemathesis.openapi.from_url(site.url("/api/schema"), config=config)

    @schema.auth(refresh_interval=None)
    class FreshUser:
        def get(self, case, context) -> str:
            with lock:
                return next(tokens)

        def set(self, case, data: str, context) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    began = time.monotonic()
    findings = Findings()
    findings.collect(from_schema(schema).execute())
    _write_report("ending", findings, seed=seed, seconds=round(time.monotonic() - began, 1))

    assert not findings.failures, f"{findings.explain()}\n\n{site.logs()}"
    assert not findings.errors, findings.explain()
    assert findings.operations == {f"POST {path}" for path in ENDING_PATHS}
    assert not [code for code in findings.statuses if code >= 500]


# Ada's objects that Bob must neither change nor, where private, read: her post and
# profile (public to read, hers alone to change) and her report's job and file (hers alone).
PEER_WRITES = [
    ("/api/posts/{post_id}", "PATCH"),
    ("/api/posts/{post_id}", "DELETE"),
    ("/api/users/{user_id}", "PATCH"),
]
PEER_READS = [("/api/jobs/{job_id}", "GET"), ("/api/reports/{job_id}", "GET")]
# Bodies per write, drawn by schemathesis from the operation's request schema.
PEER_EXAMPLES = 25
REPORT_SECONDS = 60


def test_bob_neither_changes_nor_reads_what_is_adas(site, people, seed):
    # schemathesis's object_level_authorization replays reads only, and only of objects
    # the run happened to make. This makes Ada's objects first, then sends Bob's writes
    # with schema-valid bodies of every shape, and Bob's reads of her private things.
    ada, bob = (f"Bearer {people[name]['access']}" for name in ("ada", "bob"))
    # The fuzzing before may have spent Ada's report quota (jobs.queues.QUOTAS): an hour
    # passes for her jobs, as it would for a person.
    site.shell(_AN_HOUR_PASSES.replace("{email}", "ada@example.com"))
    created = _call(site, "POST", "/api/posts", ada, {"title": "Ada's", "content": "Only Ada edits this."})
    queued = _call(site, "POST", "/api/reports", ada)
    ids = {"post_id": created["id"], "user_id": people["ada"]["id"], "job_id": queued["jobId"]}
    before = {path: _call(site, "GET", path, ada) for path in (f"/api/posts/{ids['post_id']}", "/api/me")}
    _wait_for_report(site, ada, ids["job_id"])

    config = _config(site, seed=seed, seconds=REPORT_SECONDS, operations=[])
    schema = schemathesis.openapi.from_url(site.url("/api/schema"), config=config)
    sent: Counter[str] = Counter()
    for path, method in PEER_WRITES:
        operation = schema[path][method]
        fixed = {name: ids[name] for name in ids if f"{{{name}}}" in path}

        @hypothesis.given(case=operation.as_strategy(path_parameters=fixed, headers={"Authorization": bob}))
        @hypothesis.settings(
            max_examples=PEER_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.seed(seed)
        def bob_tries(case) -> None:
            response = case.call()
            sent[case.operation.label] += 1
            assert response.status_code == 403, f"{case.method} {case.formatted_path} as Bob: {response.status_code}"

        bob_tries()
    assert set(sent) == {f"{method} {path}" for path, method in PEER_WRITES}, sent

    for path, method in PEER_READS:
        target = path.format(**ids)
        assert site.request(method, target, headers={"Authorization": ada})[0] == 200, target
        status, _, content = site.request(method, target, headers={"Authorization": bob})
        assert status == 404, f"{method} {target} as Bob: {status} {content[:200]!r}"

    after = {path: _call(site, "GET", path, ada) for path in before}
    for seen in (*before.values(), *after.values()):
        seen.pop("views", None)  # Ada's own reads count as views
    assert after == before


def _call(site: LiveKestrel, method: str, path: str, authorization: str, body: dict | None = None) -> dict:
    headers = {"Authorization": authorization, "Content-Type": "application/json"}
    status, _, content = site.request(method, path, headers=headers, body=json.dumps(body).encode() if body else None)
    assert 200 <= status < 300, f"{method} {path}: {status} {content[:300]!r}"
    return json.loads(content)


def _wait_for_report(site: LiveKestrel, authorization: str, job_id: str) -> None:
    deadline = time.monotonic() + REPORT_SECONDS
    while (status := _call(site, "GET", f"/api/jobs/{job_id}", authorization)["status"]) != "finished":
        assert status not in ("failed", "expired"), f"the report job {status}"
        assert time.monotonic() < deadline, f"the report job is still {status} after {REPORT_SECONDS} s"
        time.sleep(0.2)


def _paths(site: LiveKestrel) -> list[str]:
    status, _, content = site.request("GET", "/api/schema?format=json")
    assert status == 200, content[:300]
    return list(json.loads(content)["paths"])
