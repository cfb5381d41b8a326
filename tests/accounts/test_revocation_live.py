"""Revocation across web processes, on a live Kestrel (gunicorn, two workers).

Each worker remembers whose session it has seen and then reads the session inside the
rate limiter's script instead of on its own, and keeps the user's row in its memory
(accounts.backends). Whatever ends a session or a token in one worker, or in another
process altogether, must hold on the very next request in every worker: every request
after it, served by both workers, is refused, even when no invalidation message was
sent at all.

gunicorn's access log names the worker that served each request (GUNICORN_CMD_ARGS
adds the pid and a probe header to each line), so the tests know when both workers
have served a session, and that both refused it afterwards.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

import pytest

from accounts.backends import AUTH_USER
from devstack.web import http_request
from tests.live import LiveKestrel, live_kestrel

pytestmark = pytest.mark.slow

PASSWORD = "a-Strong-pass-42"
WORKERS = 2
BATCH = 8  # concurrent requests, each on a new connection: both workers take some
MAX_BATCHES = 25
LOG_WAIT = 5.0  # seconds for a served request's access-log line to appear

_probes = itertools.count()
_addresses = itertools.count(1)
_LINE = re.compile(r"^worker=<?(\d+)>? probe=(\S+) status=(\d+)$", re.MULTILINE)


@pytest.fixture(scope="module")
def site() -> Iterator[LiveKestrel]:
    env = {
        # A client address per person (X-Forwarded-For): the log-in limits stay out of the way.
        "RATE_LIMIT_TRUSTED_PROXIES": "1",
        "RATE_LIMIT_API_PER_MINUTE": "1000000",
        "GUNICORN_CMD_ARGS": "--access-logformat 'worker=%(p)s probe=%({x-probe}i)s status=%(s)s'",
    }
    with live_kestrel(env=env, web_workers=WORKERS, web_threads=8) as live:
        yield live


@dataclass
class Person:
    site: LiveKestrel
    address: str = field(default_factory=lambda: f"10.77.0.{next(_addresses)}")
    cookies: dict[str, str] = field(default_factory=dict)
    bearer: str | None = None

    def call(self, method: str, path: str, body: object = None, *, probe: str = "-") -> tuple[int, dict]:
        headers = {"X-Forwarded-For": self.address, "Accept": "application/json", "X-Probe": probe}
        if self.bearer is not None:
            headers["Authorization"] = f"Bearer {self.bearer}"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
            if method != "GET" and "csrftoken" in self.cookies:
                headers["X-CSRFToken"] = self.cookies["csrftoken"]
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        status, response_headers, content = http_request(self.site.port, method, path, headers=headers, body=payload)
        for header in response_headers.get_all("Set-Cookie") or []:
            jar = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)
        return status, json.loads(content) if content else {}

    def log_in(self, email: str) -> None:
        status, _ = self.call("POST", "/api/login", {"email": email, "password": PASSWORD})
        assert status == 200, status


def sign_up(site: LiveKestrel, name: str) -> tuple[Person, str]:
    """A new person, logged in (sign-up logs in); their email."""
    person = Person(site)
    email = f"{name}@example.com"
    status, body = person.call("POST", "/api/register", {"email": email, "username": name, "password": PASSWORD})
    assert status == 201, body
    return person, email


def served(site: LiveKestrel, probes: set[str]) -> dict[str, tuple[int, int]]:
    """probe -> (worker pid, status), from the access log, once every probe is in it."""
    deadline = time.monotonic() + LOG_WAIT
    while True:
        found = {
            probe: (int(pid), int(status))
            for pid, probe, status in _LINE.findall(site.web.log_path.read_text(errors="replace"))
            if probe in probes
        }
        if len(found) == len(probes) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def me_from_every_worker(person: Person) -> list[tuple[int, int]]:
    """GET /api/me in concurrent batches until both workers have served some: (pid, status) of each."""
    results: list[tuple[int, int]] = []
    with ThreadPoolExecutor(BATCH) as pool:
        for _ in range(MAX_BATCHES):
            probes = [f"p{next(_probes)}" for _ in range(BATCH)]
            statuses = list(pool.map(lambda probe: person.call("GET", "/api/me", probe=probe)[0], probes))
            log = served(person.site, set(probes))
            assert len(log) == len(probes), f"access log lines missing:\n{person.site.logs()}"
            assert [log[p][1] for p in probes] == statuses
            results += [log[p] for p in probes]
            if len({pid for pid, _ in results}) == WORKERS:
                return results
    raise AssertionError(f"one worker served all {len(results)} requests:\n{person.site.logs()}")


def statuses(results: list[tuple[int, int]]) -> set[int]:
    return {status for _, status in results}


_USER_L1_HITS = re.compile(
    rf'^kestrel_cache_hit_total\{{(?=[^}}]*family="{AUTH_USER.name}")(?=[^}}]*tier="l1")[^}}]*\}} (\S+)$', re.M
)


def user_l1_hits(site: LiveKestrel) -> float:
    """Requests whose user came from a worker's memory, over both workers (/metrics)."""
    status, _, content = site.request(
        "GET", "/metrics", headers={"Authorization": f"Bearer {site.env['METRICS_TOKEN']}"}
    )
    assert status == 200
    return sum(float(value) for value in _USER_L1_HITS.findall(content.decode()))


def served_from_memory(site: LiveKestrel, person: Person) -> None:
    """Both workers serve `person` and hold their user's row: the next requests' users come from memory."""
    before = user_l1_hits(site)
    assert statuses(me_from_every_worker(person)) == {200}
    deadline = time.monotonic() + LOG_WAIT  # each worker publishes its counters every second
    while user_l1_hits(site) <= before:
        assert time.monotonic() < deadline, "no request's user came from a worker's memory"
        time.sleep(0.1)
    assert statuses(me_from_every_worker(person)) == {200}


def in_another_process(site: LiveKestrel, email: str, code: str) -> None:
    """Run `code` (with `user`, the person's row) in a process that is neither worker."""
    site.shell(
        "import os\n"
        "from django.db.models import F\n"
        "from accounts import tokens\n"
        "from accounts.models import User\n"
        "user = User.objects.get(email=os.environ['LIVE_EMAIL'])\n" + code,
        env={"LIVE_EMAIL": email},
    )


def test_a_logout_in_one_worker_ends_the_session_in_both(site):
    ada, _ = sign_up(site, "ada")
    assert statuses(me_from_every_worker(ada)) == {200}  # both workers know the session now
    stolen = Person(site, cookies=dict(ada.cookies))  # the same session cookie, kept

    status, _ = ada.call("POST", "/api/logout", {})

    assert status == 200
    assert statuses(me_from_every_worker(stolen)) == {401}


def test_log_out_everywhere_ends_every_other_session_in_both_workers(site):
    bob, email = sign_up(site, "bob")
    laptop = Person(site)
    laptop.log_in(email)
    assert statuses(me_from_every_worker(laptop)) == {200}

    status, _ = bob.call("POST", "/api/logout-all", {})

    assert status == 200
    assert statuses(me_from_every_worker(laptop)) == {401}


def test_a_password_change_ends_the_other_sessions_in_both_workers(site):
    cyd, email = sign_up(site, "cyd")
    laptop = Person(site)
    laptop.log_in(email)
    assert statuses(me_from_every_worker(laptop)) == {200}

    status, _ = cyd.call("POST", "/api/password", {"old": PASSWORD, "new": "another-Strong-pass-43"})

    assert status == 200
    assert statuses(me_from_every_worker(laptop)) == {401}
    assert statuses(me_from_every_worker(cyd)) == {200}  # the changer keeps their session


def test_a_revoked_access_token_is_refused_by_both_workers(site):
    _, email = sign_up(site, "dee")
    phone = Person(site)
    status, tokens = phone.call("POST", "/api/token", {"email": email, "password": PASSWORD})
    assert status == 200
    phone.bearer = tokens["access"]
    assert statuses(me_from_every_worker(phone)) == {200}

    status, _ = phone.call("POST", "/api/logout", {})

    assert status == 200
    assert statuses(me_from_every_worker(phone)) == {403}


def test_a_password_change_elsewhere_ends_the_sessions_both_workers_hold_in_memory_without_a_message(site):
    eve, email = sign_up(site, "eve")
    laptop = Person(site)
    laptop.log_in(email)
    served_from_memory(site, laptop)

    # What another host's password change leaves: a new hash and epoch in the database,
    # the epoch's mirror in Redis, and no invalidation message for the workers to rely on.
    in_another_process(
        site,
        email,
        "user.set_password('another-Strong-pass-43')\n"
        "User.objects.filter(pk=user.pk).update(password=user.password, token_epoch=F('token_epoch') + 1)\n"
        "tokens.token_epoch_publish(user_id=user.pk, epoch=User.objects.get(pk=user.pk).token_epoch)\n",
    )

    assert statuses(me_from_every_worker(laptop)) == {401}
    assert statuses(me_from_every_worker(eve)) == {401}


def test_a_log_out_everywhere_in_one_worker_ends_what_both_hold_in_memory(site):
    fay, email = sign_up(site, "fay")
    laptop, phone = Person(site), Person(site)
    laptop.log_in(email)
    status, pair = phone.call("POST", "/api/token", {"email": email, "password": PASSWORD})
    assert status == 200
    phone.bearer = pair["access"]
    served_from_memory(site, laptop)
    served_from_memory(site, phone)

    status, _ = fay.call("POST", "/api/logout-all", {})

    assert status == 200
    assert statuses(me_from_every_worker(laptop)) == {401}
    assert statuses(me_from_every_worker(phone)) == {403}


def test_a_deactivation_elsewhere_ends_every_session_and_token_in_both_workers(site):
    gus, email = sign_up(site, "gus")
    phone = Person(site)
    status, pair = phone.call("POST", "/api/token", {"email": email, "password": PASSWORD})
    assert status == 200
    phone.bearer = pair["access"]
    served_from_memory(site, gus)
    served_from_memory(site, phone)

    in_another_process(site, email, "user.is_active = False\nuser.save()\n")  # as the admin does

    assert statuses(me_from_every_worker(gus)) == {401}
    assert statuses(me_from_every_worker(phone)) == {403}
