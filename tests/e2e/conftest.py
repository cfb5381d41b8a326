"""The browser suite's stack: one live Kestrel and one headless Debian Chromium per test session.

Everything goes over HTTP to a Kestrel that `tests/live.py` starts (two Redis servers,
SQLite, gunicorn, an RQ worker), never through the unit suite's database or Redis.
Screenshots go to `var/e2e/` (or `$E2E_ARTIFACTS`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from devstack.processes import PROJECT_ROOT
from tests.e2e.checks import assert_no_csp_violation, watch_csp
from tests.e2e.people import Corner, Person, log_in, seed
from tests.live import LiveKestrel, live_kestrel

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"viewport": {"width": 1280, "height": 900}}
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}
# Generous for a loaded CI machine, yet every wait ends as soon as the page is ready.
WAIT_MS = 15_000


_outcome = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Before `-m` selects: a module here that forgot its pytestmark still stays out of `make test`.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    # Kept for the context fixture's teardown, which screenshots the pages of a failed test.
    report = yield
    if report.when == "call":
        item.stash[_outcome] = report
    return report


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    """The unit suite's private Redis is not this suite's: nothing here reads or flushes it."""


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("E2E_ARTIFACTS") or PROJECT_ROOT / "var" / "e2e")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def site() -> Iterator[LiveKestrel]:
    # Every open page holds an SSE stream (one gunicorn thread each) until the server's
    # next keep-alive finds the browser gone: production's 64 threads, not the default 16.
    with live_kestrel(web_threads=64) as live:
        live.wait_until_healthy()
        yield live


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (the suite never downloads a browser)")
    expect.set_options(timeout=WAIT_MS)
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


@pytest.fixture(scope="session")
def signed_in() -> dict[str, dict]:
    """Cookies of a person logged in once through the form, by username, for later contexts."""
    return {}


@pytest.fixture
def csp_violations() -> list[str]:
    """Content-Security-Policy violations met by this test's browser contexts (none allowed)."""
    return []


@pytest.fixture
def new_context(
    request: pytest.FixtureRequest,
    browser: Browser,
    site: LiveKestrel,
    artifacts: Path,
    signed_in: dict[str, dict],
    csp_violations: list[str],
) -> Iterator[Callable[..., BrowserContext]]:
    """Open a browser context (one person's cookies) on the live site; `phone=True` for a phone,
    `person` to start logged in as them. Any CSP violation on its pages fails the test."""
    opened: list[BrowserContext] = []

    def make(*, phone: bool = False, person: Person | None = None) -> BrowserContext:
        context = browser.new_context(
            base_url=site.base_url,
            storage_state=signed_in.get(person.username) if person else None,
            **(PHONE if phone else DESKTOP),
        )
        context.set_default_timeout(WAIT_MS)
        watch_csp(context, csp_violations)
        opened.append(context)
        if person and person.username not in signed_in:
            page = context.new_page()
            log_in(page, person)
            signed_in[person.username] = context.storage_state()
            page.close()
        return context

    yield make
    report = request.node.stash.get(_outcome, None)
    if report is not None and report.failed:
        # What each person's page showed when the test failed, and what the servers said.
        name = re.sub(r"\W+", "-", request.node.name).strip("-")
        for n, page in enumerate(page for context in opened for page in context.pages):
            try:
                page.screenshot(path=artifacts / f"failed-{name}-{n}.png", full_page=True)
            except PlaywrightError as exc:  # a page that cannot be drawn must not hide the failure
                print(f"no screenshot of page {n} ({page.url}): {exc}")
        print(site.logs())
    for context in opened:
        context.close()
    assert_no_csp_violation(csp_violations)


@pytest.fixture
def shoot(artifacts: Path) -> Callable[[Page, str], None]:
    """A full-page screenshot of `page` as `<name>.png` among the artifacts."""

    def take(page: Page, name: str) -> None:
        page.screenshot(path=artifacts / f"{name}.png", full_page=True)

    return take


@pytest.fixture(scope="session")
def corner(site: LiveKestrel) -> Corner:
    """Three people made through Kestrel's own services, for tests that need a ready-made site:
    a writer with a liked post and a follower, the reader who likes it, and a staff member."""
    return seed(site)
