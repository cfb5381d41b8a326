"""Kestrel as a person meets it, in a real browser against the live stack.

One story, in order, each step judged by what the page shows: a newcomer signs up and
posts, a reader follows and likes, the newcomer sees the like arrive live, climbs the
leaderboard, gets a report built, a staff member reads /ops, and the newcomer logs out.
Every page on the way passes the accessibility checks and is kept as a screenshot.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.e2e.checks import assert_accessible, assert_no_csp_violation, watch_navigations
from tests.e2e.people import Person, log_in
from tests.live import LiveKestrel

pytestmark = pytest.mark.e2e

TITLE = "First light over the ridge"
CONTENT = "A kestrel hung in the wind above the ridge this morning, tail fanned, head perfectly still."
# The report job runs on the worker: queueing, a fork, the CSV, the database.
REPORT_WAIT_MS = 60_000


def wait_for_mail(site: LiveKestrel, to: str, subject: str, timeout: float = 30.0) -> str:
    """The message the worker sent to `to` with `subject` (mail is written to files, polled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in site.sent_mail():
            if f"To: {to}" in message and subject in message:
                return message
        time.sleep(0.1)
    raise AssertionError(f"no mail to {to} about {subject!r} within {timeout:.0f} s; sent: {site.sent_mail()}")


def test_a_newcomer_posts_is_followed_and_liked_live_climbs_the_board_and_gets_a_report(
    site: LiveKestrel,
    new_context: Callable[..., BrowserContext],
    shoot: Callable[[Page, str], None],
    csp_violations: list[str],
) -> None:
    shots = iter(range(1, 100))

    def seen(page: Page, name: str, *, accessible: bool = True) -> None:
        """Every page on the way: no CSP violation so far, the accessibility checks (Kestrel's
        own pages), then `NN-name.png` in journey order."""
        assert_no_csp_violation(csp_violations)
        if accessible:
            assert_accessible(page)
        shoot(page, f"{next(shots):02d}-{name}")

    author = Person("hobby")
    reader = Person("saker")
    staff = Person("lanner")
    site.create_user(email=reader.email, username=reader.username, password=reader.password)
    site.create_user(email=staff.email, username=staff.username, password=staff.password, is_staff=True)
    page = new_context().new_page()  # the author's browser
    other = new_context().new_page()  # the reader's
    navigation = page.get_by_role("navigation", name="Main")

    # 1. The author signs up through the site's form; the reader logs in through the other.
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome to Kestrel")
    seen(page, "home-anonymous")
    navigation.get_by_role("link", name="Sign up").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign up")
    page.get_by_label("Email").fill(author.email)
    page.get_by_label("Username").fill(author.username)
    page.get_by_label("Password").fill(author.password)
    seen(page, "signup")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {author.username}!")
    expect(page.get_by_text(f"Welcome to Kestrel, {author.username}!")).to_be_visible()
    expect(navigation.get_by_role("link", name=f"@{author.username}")).to_be_visible()
    seen(page, "home-new-member")
    wait_for_mail(site, author.email, "Welcome")

    other.goto("/login")
    expect(other.get_by_role("heading", level=1)).to_have_text("Log in")
    other.get_by_label("Email").fill(reader.email)
    other.get_by_label("Password").fill(reader.password)
    seen(other, "login")
    other.get_by_role("button", name="Log in").click()
    expect(other.get_by_role("heading", level=1)).to_have_text(f"Hello, {reader.username}!")
    seen(other, "home-reader")

    # 2. The author writes a post from the home page.
    page.get_by_label("Title").fill(TITLE)
    page.get_by_label("What's on your mind?").fill(CONTENT)
    seen(page, "compose")
    page.get_by_role("button", name="Post", exact=True).click()
    expect(page).to_have_url(re.compile(r"/posts/\d+$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(TITLE)
    expect(page.get_by_text("Posted.")).to_be_visible()
    expect(page.get_by_text(CONTENT)).to_be_visible()
    seen(page, "post")

    # 3. The reader finds the author through the post, follows them from their profile,
    # and the post is on the reader's home timeline.
    other.get_by_role("navigation", name="Posts to show").get_by_role("link", name="Everyone").click()
    everyone = other.get_by_role("region", name="Recent posts from everyone")
    expect(everyone.get_by_role("heading", name=TITLE)).to_be_visible()
    seen(other, "home-reader-new-post")
    everyone.get_by_role("article").filter(has_text=TITLE).get_by_role("link", name=f"@{author.username}").click()
    expect(other.get_by_role("heading", level=1)).to_have_text(f"@{author.username}")
    expect(other.get_by_text("0 followers", exact=True)).to_be_visible()
    seen(other, "profile")
    other.get_by_role("button", name=f"Follow @{author.username}").click()  # in place: no page load
    expect(other.get_by_role("button", name=f"Unfollow @{author.username}")).to_be_visible()
    expect(other.get_by_text("1 follower", exact=True)).to_be_visible()
    seen(other, "profile-followed")
    other.get_by_role("link", name="Kestrel", exact=True).click()
    timeline = other.get_by_role("region", name="From people you follow")
    expect(timeline.get_by_role("heading", name=TITLE)).to_be_visible()
    expect(timeline).to_contain_text(f"by @{author.username}")
    seen(other, "timeline")

    # Not on the leaderboard yet: nobody has liked the author's posts.
    navigation.get_by_role("link", name="Leaderboard").click()
    expect(page.get_by_text("You are not on the board yet")).to_be_visible()
    expect(page.get_by_role("link", name=f"@{author.username}")).to_have_count(1)  # only in the navigation
    seen(page, "leaderboard-before")

    # The author's home page is open, its notification stream connected, when the like comes.
    with page.expect_response(lambda response: "/api/notifications/stream" in response.url) as stream:
        page.get_by_role("link", name="Kestrel", exact=True).click()
    assert stream.value.status == 200
    assert stream.value.headers["content-type"].startswith("text/event-stream")
    badge = page.locator("#notification-badge")
    expect(badge).to_have_text("1 unread")  # the follow
    navigations = watch_navigations(page)
    url_before = page.url

    # 4. The reader likes the post.
    timeline.get_by_role("link", name=TITLE).click()
    expect(other.get_by_role("heading", level=1)).to_have_text(TITLE)
    seen(other, "post-reader")
    other.get_by_role("button", name=f"Like {TITLE}").click()
    expect(other.get_by_role("button", name=f"Unlike {TITLE}")).to_be_visible()
    expect(other.get_by_text("1 like", exact=True)).to_be_visible()
    seen(other, "liked")

    # 5. The author's open page shows it live: a toast and the unread count, no reload.
    toast = page.get_by_role("status").get_by_role("link", name=f"@{reader.username} liked “{TITLE}”")
    expect(toast).to_be_visible()
    expect(toast).to_have_attribute("href", re.compile(r"/posts/\d+$"))  # leads to the post liked
    expect(badge).to_have_text("2 unread")
    expect(badge).to_be_visible()
    assert navigations == [], f"the page navigated: {navigations}"
    assert page.url == url_before
    assert page.evaluate("() => window.kestrelSameDocument === true"), "the document was replaced"
    seen(page, "live-notification")

    navigation.get_by_role("link", name=re.compile(r"^Notifications")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Notifications")
    notifications = page.get_by_role("list").filter(has_text="liked")
    expect(notifications.get_by_role("listitem")).to_have_count(2)
    expect(notifications.get_by_role("listitem").first).to_contain_text(f"@{reader.username} liked “{TITLE}”")
    expect(notifications.get_by_role("listitem").last).to_contain_text(f"@{reader.username} followed you")
    expect(badge).to_be_hidden()  # read by being seen
    seen(page, "notifications")

    # 6. The author is on the leaderboard, ranked by the likes received.
    navigation.get_by_role("link", name="Leaderboard").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Leaderboard")
    rows = page.get_by_role("table").first.locator("tbody:not(.load-older) > tr")  # not "Load more"
    # Around you: wherever the author ranks (other tests' people may fill the first page).
    around = page.get_by_role("table", name="The people ranked around you")
    mine = around.get_by_role("row").filter(has=page.get_by_role("link", name=f"@{author.username}", exact=True))
    expect(mine).to_have_count(1)
    expect(mine.get_by_role("cell").last).to_have_text("1")
    expect(mine).to_have_class("me")
    ranks = [int(cell) for cell in rows.locator("td:first-child").all_inner_texts()]
    assert ranks == list(range(1, len(ranks) + 1)), f"ranks out of order: {ranks}"
    # The rank around the author is their place on the board: on the first page, that row.
    rank, board = int(mine.get_by_role("cell").first.inner_text()), rows.all_inner_texts()
    assert board[rank - 1] == mine.inner_text() if rank <= len(board) else len(board) == 20, (rank, board)
    expect(page.get_by_role("heading", name="Around you")).to_be_visible()
    seen(page, "leaderboard")

    # 7. The author asks for an activity report and watches it finish, without a reload.
    navigation.get_by_role("link", name="Reports").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your reports")
    expect(page.get_by_text("No reports yet.")).to_be_visible()
    seen(page, "reports")
    page.get_by_role("button", name="Build my activity report").click()
    expect(page.get_by_text("Your report is being built")).to_be_visible()
    watched = watch_navigations(page)
    job = page.locator("article.job")
    expect(job).to_have_count(1)
    download_link = job.get_by_role("link", name="Download CSV")
    expect(download_link).to_be_visible(timeout=REPORT_WAIT_MS)
    expect(job.locator(".status")).to_have_text("Ready")
    expect(job).to_contain_text("1 post,")  # one post, in the singular
    expect(job).to_contain_text("1 like")
    expect(job).not_to_contain_text("1 likes")
    assert job.get_by_role("progressbar", name="Report progress").evaluate("bar => bar.value") == 100
    assert watched == [], f"the reports page navigated: {watched}"
    assert page.evaluate("() => window.kestrelSameDocument === true"), "the reports page was reloaded"
    seen(page, "report-ready")
    with page.expect_download() as download_info:
        download_link.click()
    download = download_info.value
    assert download.suggested_filename.endswith(".csv")
    lines = list(csv.reader(io.StringIO(Path(download.path()).read_text())))
    assert lines[0] == ["post_id", "title", "created_at", "views", "likes"]
    # A header and one row per post: the totals are in the email, never among the data rows.
    assert [line[1] for line in lines[1:]] == [TITLE]
    assert lines[1][4] == "1"
    mail = wait_for_mail(site, author.email, "Your Kestrel activity report is ready")
    assert download_link.get_attribute("href") in mail

    # 8. A staff member opens /ops; the charts have points from samples taken now, by the
    # job the cron scheduler runs every minute.
    site.shell("from ops.jobs import sample_ops\nsample_ops()\nsample_ops()\n")
    ops = new_context().new_page()
    log_in(ops, staff)
    ops.get_by_role("navigation", name="Main").get_by_role("link", name="Ops").click()
    expect(ops.get_by_role("heading", level=1)).to_have_text("Ops")
    charts = ops.locator("#charts figure")
    expect(charts.first).to_be_visible()
    assert charts.count() >= 10
    # The state role's memory, drawn from at least two samples, with its unit.
    memory = ops.get_by_role("img", name=re.compile(r"^State role, memory used: latest [\d.]+ [kMG]?B,"))
    expect(memory).to_be_visible()
    expect(memory).to_have_accessible_name(re.compile(r"\b([2-9]|\d\d+) samples"))
    expect(memory.locator("polyline")).to_have_count(1)
    assert ops.locator("#charts svg.chart polyline").count() >= 5
    expect(ops.get_by_role("region", name="Queues")).to_contain_text("reports")
    seen(ops, "ops")

    # The footer's API link: Swagger UI draws every operation, under the same policy.
    ops.get_by_role("contentinfo").get_by_role("link", name="API").click()
    expect(ops).to_have_url(re.compile(r"/api/docs$"))
    operations = ops.locator(".swagger-ui .opblock")
    expect(operations.first).to_be_visible()
    assert operations.count() >= 20, f"Swagger UI shows {operations.count()} operations"
    create_post = ops.locator(".opblock-post").filter(
        has=ops.locator(".opblock-summary-path", has_text=re.compile(r"^/api/posts$"))
    )
    create_post.locator(".opblock-summary").click()  # opened: its example body, highlighted
    expect(
        create_post.locator(".opblock-body .body-param__example, .opblock-body .highlight-code").first
    ).to_be_visible()
    seen(ops, "api-docs", accessible=False)  # Swagger UI's own markup is not Kestrel's to fix

    # 9. The author logs out, and really is: a page that needs a login sends them to it.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_text("You have been logged out.")).to_be_visible()
    expect(navigation.get_by_role("link", name="Log in")).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)
    seen(page, "logged-out")
    page.goto("/reports")
    expect(page).to_have_url(re.compile(r"/login\?next=/reports$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    assert page.request.get("/api/me").status == 401
    seen(page, "login-required")
