"""Every page of the journey, one by one: accessible, usable from the keyboard, and on a phone.

The pages are those of a ready-made corner of the site (`corner`): a writer whose post a
reader follows and liked, and a staff member. Each page names its main controls: Tab
from the top must reach them with a visible focus ring at every stop, and on a phone
they, and the navigation, must be on screen and big enough to tap. Accessible, at both
sizes, means Kestrel's own checks and axe-core's WCAG 2 A/AA rules, colour contrast among them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.e2e.checks import (
    assert_accessible,
    assert_axe_clean,
    assert_no_horizontal_scroll,
    assert_tappable,
    focused,
    tab_from_top,
)
from tests.e2e.people import Corner, Person

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Visit:
    name: str
    path: str  # formatted with the corner's ids: {writer}, {reader}, {post}
    who: str | None  # "writer", "reader", "staff" or None (nobody logged in)
    heading: str | re.Pattern
    controls: Callable[[Page], list[Locator]]


VISITS = [
    Visit(
        "home-anonymous",
        "/",
        None,
        "Welcome to Kestrel",
        lambda page: [page.get_by_role("navigation", name="Main").get_by_role("link", name="Sign up")],
    ),
    Visit(
        "signup",
        "/signup",
        None,
        "Sign up",
        lambda page: [
            page.get_by_label("Email"),
            page.get_by_label("Username"),
            page.get_by_label("Password"),
            page.get_by_role("button", name="Create account"),
        ],
    ),
    Visit(
        "login",
        "/login",
        None,
        "Log in",
        lambda page: [
            page.get_by_label("Email"),
            page.get_by_label("Password"),
            page.get_by_role("button", name="Log in"),
        ],
    ),
    Visit(
        "home",
        "/",
        "writer",
        "Hello, wren!",
        lambda page: [
            page.get_by_label("Title"),
            page.get_by_label("What's on your mind?"),
            page.get_by_role("button", name="Post"),
        ],
    ),
    Visit(
        "profile",
        "/users/{writer}",
        "reader",
        "@wren",
        lambda page: [page.get_by_role("button", name="Unfollow")],
    ),
    Visit(
        "post",
        "/posts/{post}",
        "reader",
        "Hovering over the meadow",
        lambda page: [page.get_by_role("button", name="Unlike")],
    ),
    Visit(
        "leaderboard",
        "/leaderboard",
        "writer",
        "Leaderboard",
        lambda page: [page.get_by_role("table").first.get_by_role("link", name="@wren")],
    ),
    Visit(
        "notifications",
        "/notifications",
        "writer",
        "Notifications",
        lambda page: [page.get_by_role("link", name="Notifications")],
    ),
    Visit(
        "reports",
        "/reports",
        "writer",
        "Your reports",
        lambda page: [
            page.get_by_role("button", name="Build my activity report"),
            page.get_by_role("button", name="Email me"),
        ],
    ),
    Visit(
        "ops",
        "/ops",
        "staff",
        "Ops",
        lambda page: [page.get_by_role("region", name="Queues"), page.get_by_role("region", name="Kestrel's commands")],
    ),
    Visit(
        "ops-not-staff",
        "/ops",
        "reader",
        "This page is for staff",
        lambda page: [page.get_by_role("main").get_by_role("link", name="Back to the home page")],
    ),
    Visit(
        "not-found",
        "/no/such/page",
        "reader",
        "Not found",
        lambda page: [page.get_by_role("main").get_by_role("link", name="Back to the home page")],
    ),
]


def open_visit(visit: Visit, corner: Corner, new_context: Callable[..., BrowserContext], *, phone: bool) -> Page:
    person: Person | None = getattr(corner, visit.who) if visit.who else None
    page = new_context(phone=phone, person=person).new_page()
    page.goto(visit.path.format(writer=corner.writer.id, reader=corner.reader.id, post=corner.post_id))
    expect(page.get_by_role("heading", level=1)).to_have_text(visit.heading)
    return page


@pytest.mark.parametrize("visit", VISITS, ids=[visit.name for visit in VISITS])
def test_the_page_is_accessible_and_keyboard_operable(visit: Visit, corner: Corner, new_context, shoot) -> None:
    page = open_visit(visit, corner, new_context, phone=False)
    assert_accessible(page)
    skip_link = page.get_by_role("link", name="Skip to main content")
    stops = tab_from_top(page, skip_link, *visit.controls(page))
    assert stops[0]["text"] == "Skip to main content", f"the first Tab stop is not the skip link: {stops[0]}"
    # The navigation says where the visitor is.
    current = page.get_by_role("navigation", name="Main").locator("[aria-current=page]")
    if visit.name in {"leaderboard", "notifications", "reports", "ops", "login"}:
        expect(current).to_have_count(1)
    shoot(page, f"page-{visit.name}")


@pytest.mark.parametrize("visit", VISITS, ids=[visit.name for visit in VISITS])
def test_the_page_fits_a_phone(visit: Visit, corner: Corner, new_context, shoot) -> None:
    page = open_visit(visit, corner, new_context, phone=True)
    assert_accessible(page)
    assert_no_horizontal_scroll(page)
    navigation = page.get_by_role("navigation", name="Main")
    expect(navigation).to_be_in_viewport()
    entries = navigation.locator("a, button")
    assert entries.count() >= 2
    for entry in entries.all():
        expect(entry).to_be_visible()
        assert_tappable(page, entry)
    assert_tappable(page, page.get_by_role("link", name="Kestrel", exact=True))
    for control in visit.controls(page):
        expect(control).to_be_visible()
        assert_tappable(page, control)
    page.evaluate("() => window.scrollTo(0, 0)")
    shoot(page, f"phone-{visit.name}")


def test_the_skip_link_moves_focus_past_the_navigation(corner: Corner, new_context, shoot) -> None:
    page = new_context(person=corner.writer).new_page()
    page.goto("/")
    skip_link = page.get_by_role("link", name="Skip to main content")
    expect(skip_link).not_to_be_in_viewport()  # out of sight until a keyboard reaches it
    tab_from_top(page, skip_link)
    expect(skip_link).to_be_in_viewport()
    shoot(page, "keyboard-skip-link")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#main$"))
    page.keyboard.press("Tab")
    expect(page.get_by_label("Title")).to_be_focused()
    stop = focused(page)
    assert stop is not None
    assert stop["indicator"], f"no focus ring on the title field: {stop}"
    shoot(page, "keyboard-title-field")


def test_the_login_form_starts_in_the_email_field(new_context) -> None:
    page = new_context().new_page()
    page.goto("/login")
    expect(page.get_by_label("Email")).to_be_focused()


def test_on_a_phone_a_member_logs_in_posts_and_moves_around_by_tapping(site, new_context, shoot) -> None:
    kite = Person("kite")
    site.create_user(email=kite.email, username=kite.username, password=kite.password)
    page = new_context(phone=True).new_page()
    page.goto("/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Log in").tap()
    page.get_by_label("Email").tap()
    page.get_by_label("Email").fill(kite.email)
    page.get_by_label("Password").tap()
    page.get_by_label("Password").fill(kite.password)
    page.get_by_role("button", name="Log in").tap()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, kite!")

    # One long word, as people paste links: it wraps instead of widening the page.
    title = "Windhover" * 12
    page.get_by_label("Title").tap()
    page.get_by_label("Title").fill(title)
    page.get_by_label("What's on your mind?").tap()
    page.get_by_label("What's on your mind?").fill("https://example.com/" + "kestrel-" * 30)
    page.get_by_role("button", name="Post").tap()
    expect(page.get_by_role("heading", level=1)).to_have_text(title)
    assert_no_horizontal_scroll(page)
    shoot(page, "phone-long-post")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Leaderboard").tap()
    expect(page.get_by_role("heading", level=1)).to_have_text("Leaderboard")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="@kite").tap()
    expect(page.get_by_role("heading", level=1)).to_have_text("@kite")
    expect(page.get_by_role("link", name=title)).to_be_visible()
    assert_no_horizontal_scroll(page)
    page.get_by_role("button", name="Log out").tap()
    expect(page.get_by_text("You have been logged out.")).to_be_visible()


def test_an_injected_inline_script_is_refused_and_the_suite_sees_it(new_context, csp_violations: list[str]) -> None:
    # What the policy is for: markup that slips into a page cannot run script. And the
    # suite's watcher, which every other test relies on, does report it.
    page = new_context().new_page()
    page.goto("/login")
    # The suite's own axe run comes in through DevTools, not the page: the watcher must
    # report nothing of it, and still report what follows.
    assert_axe_clean(page)
    page.evaluate(
        """() => {
          const script = document.createElement("script");
          script.textContent = "window.kestrelInjected = true";
          document.body.append(script);
        }"""
    )
    page.wait_for_function("() => document.readyState === 'complete'")
    for _ in range(50):
        if csp_violations:
            break
        page.wait_for_timeout(100)

    assert page.evaluate("() => window.kestrelInjected") is None
    assert any("script-src" in violation for violation in csp_violations), csp_violations
    assert all("script-src" in violation for violation in csp_violations), csp_violations  # none from axe
    csp_violations.clear()  # seen and expected: not a failure of this page


def test_a_post_only_address_opened_by_get_lands_on_the_page_with_its_button(corner: Corner, new_context) -> None:
    # A like link pasted into the address bar: the post, with the button that likes it.
    page = new_context(person=corner.reader).new_page()
    page.goto(f"/posts/{corner.post_id}/like")
    expect(page).to_have_url(re.compile(rf"/posts/{corner.post_id}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Hovering over the meadow")
    expect(page.get_by_role("button", name="Unlike")).to_be_visible()  # the GET changed nothing
    assert_accessible(page)


def test_a_report_the_queue_no_longer_holds_shows_a_legible_chip(site, new_context) -> None:
    # The grey chip (Queued, Expired) is the one a finished report never shows: a report
    # job whose RQ job is gone (its Redis lost it) is the state that keeps it on screen.
    shrike = Person("shrike")
    site.create_user(email=shrike.email, username=shrike.username, password=shrike.password)
    site.shell(
        "from django.utils import timezone\n"
        "from accounts.models import User\n"
        "from jobs.models import Job\n"
        "from jobs.queues import REPORT_JOB\n"
        "owner = User.objects.get(username='shrike')\n"
        "Job.objects.create(kind=REPORT_JOB, owner=owner, payload={}, requested=True, enqueued_at=timezone.now())\n"
    )
    page = new_context(person=shrike).new_page()
    page.goto("/reports")
    expect(page.locator("article.job .status")).to_have_text("Expired")
    assert_accessible(page)


def test_a_person_who_is_not_staff_meets_a_403_page_at_ops(corner: Corner, new_context, shoot) -> None:
    page = new_context(person=corner.reader).new_page()
    response = page.goto("/ops")
    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("This page is for staff")
    page.get_by_role("main").get_by_role("link", name="Back to the home page").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, robin!")


def test_the_site_has_a_favicon(new_context) -> None:
    page = new_context().new_page()
    page.goto("/")
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert icon is not None
    answer = page.request.get(icon)
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("image/svg+xml")
    assert page.request.get("/favicon.ico").url.endswith(icon)  # the same file, by its hashed name
