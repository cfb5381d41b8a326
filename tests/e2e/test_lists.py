"""Act where you read, page through everything, in a real Chromium: liking and following in
place without leaving the page, "Load older" on every list, and the same buttons and links
working as plain forms and links with JavaScript off."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.checks import watch_navigations
from tests.e2e.people import Person, log_in
from tests.live import LiveKestrel

pytestmark = pytest.mark.e2e

# One busy corner of the site, through Kestrel's own services (after-commit work included):
# owl posted 25 times, 55 fans follow owl, owl follows 25 of them and likes one post of 22,
# and lark follows owl. Every list below is longer than its first page.
CROWD = """
import json, os
from accounts.models import User
from accounts.services import user_create
from feeds.services import follow_create
from posts.services import post_create, post_like

password = os.environ["SEED_PASSWORD"]
owl = user_create(email="owl@example.com", username="owl", password=password)
lark = user_create(email="lark@example.com", username="lark", password=password)
follow_create(follower=lark, followee=owl)
fans = [User.objects.create_user(email=f"fan{n}@example.com", username=f"fan{n:02d}", password=None) for n in range(55)]
for n in range(25):
    post_create(author=owl, title=f"Owl note {n:02d}", content=f"Night {n}.")
for n, fan in enumerate(fans):
    follow_create(follower=fan, followee=owl)
    if n < 25:
        follow_create(follower=owl, followee=fan)
    if n < 22:
        post_like(post=post_create(author=fan, title=f"Fan note {n:02d}", content="Hello."), user=owl)
print(json.dumps({"owl": owl.pk, "lark": lark.pk}))
"""


@pytest.fixture(scope="module")
def crowd(site: LiveKestrel) -> dict[str, Person]:
    from tests.e2e.people import PASSWORD

    ids = json.loads(site.shell(CROWD, env={"SEED_PASSWORD": PASSWORD}).strip().splitlines()[-1])
    return {"owl": Person("owl", ids["owl"]), "lark": Person("lark", ids["lark"])}


def assert_stayed(page: Page, navigations: list[str]) -> None:
    assert navigations == [], f"the page navigated: {navigations}"
    assert page.evaluate("() => window.kestrelSameDocument === true"), "the document was replaced"


def load_older_until_done(page: Page, items: str, label: str = "Load older") -> list[int]:
    """Click the list's "Load older" until there is none; the item count after each click."""
    counts = [page.locator(items).count()]
    for _ in range(10):
        button = page.get_by_role("link", name=label)
        if button.count() == 0:
            break
        button.click()
        expect(page.locator(items)).not_to_have_count(counts[-1])
        counts.append(page.locator(items).count())
    return counts


def test_liking_from_a_feed_card_changes_the_card_in_place(crowd, new_context, shoot) -> None:
    page = new_context(person=crowd["lark"]).new_page()
    page.goto("/")
    card = page.locator("article.post-card", has_text="Owl note 24")
    expect(card.get_by_text("0 likes")).to_be_visible()
    navigations = watch_navigations(page)

    card.get_by_role("button", name="Like Owl note 24").click()

    expect(card.get_by_role("button", name="Unlike Owl note 24")).to_be_visible()
    expect(card.get_by_text("1 like", exact=True)).to_be_visible()
    assert_stayed(page, navigations)
    shoot(page, "lists-liked-in-place")
    card.get_by_role("button", name="Unlike Owl note 24").click()
    expect(card.get_by_text("0 likes")).to_be_visible()
    assert_stayed(page, navigations)


def test_following_from_a_profile_and_a_followers_list_in_place(crowd, new_context, shoot) -> None:
    page = new_context(person=crowd["lark"]).new_page()
    page.goto(f"/users/{crowd['owl'].id}/following")
    navigations = watch_navigations(page)
    row = page.locator("li.person", has_text="@fan24")
    row.get_by_role("button", name="Follow @fan24").click()
    expect(row.get_by_role("button", name="Unfollow @fan24")).to_be_visible()
    assert_stayed(page, navigations)

    page.goto(f"/users/{crowd['owl'].id}")
    followers = page.locator("#followers-count")
    expect(followers).to_have_text("56 followers")
    navigations = watch_navigations(page)
    page.get_by_role("button", name="Unfollow @owl").click()
    expect(page.get_by_role("button", name="Follow @owl")).to_be_visible()
    expect(followers).to_have_text("55 followers")
    assert_stayed(page, navigations)
    page.get_by_role("button", name="Follow @owl").click()
    expect(followers).to_have_text("56 followers")
    shoot(page, "lists-follow-in-place")


def test_home_has_following_and_everyone_tabs(crowd, new_context, shoot) -> None:
    page = new_context(person=crowd["lark"]).new_page()
    page.goto("/")
    tabs = page.get_by_role("navigation", name="Posts to show")
    expect(tabs.get_by_role("link", name="Following")).to_have_attribute("aria-current", "page")
    expect(page.locator("article.post-card", has_text="Fan note")).to_have_count(0)  # lark follows owl only
    tabs.get_by_role("link", name="Everyone").click()
    expect(tabs.get_by_role("link", name="Everyone")).to_have_attribute("aria-current", "page")
    expect(page.locator("article.post-card", has_text="Fan note").first).to_be_visible()
    # One relative time style, with the full date on hover.
    when = page.locator("article.post-card time").first
    expect(when).to_have_text(re.compile(r"^(just now|\d+ min)$"))
    expect(when).to_have_attribute("title", re.compile(r"^\d{1,2} \w{3} \d{4}, \d\d:\d\d$"))
    shoot(page, "lists-home-everyone")


@pytest.mark.parametrize(
    ("name", "path", "items", "label", "total"),
    [
        ("following-tab", "/", "article.post-card", "Load older", 25),
        ("everyone-tab", "/?tab=everyone", "article.post-card", "Load older", None),
        ("profile", "/users/{owl}", "article.post-card", "Load older", 25),
        ("followers", "/users/{owl}/followers", "li.person", "Load older", None),
        ("following", "/users/{owl}/following", "li.person", "Load older", None),
        ("activity", "/users/{owl}/activity", "li.activity-item", "Load older", None),
        ("notifications", "/notifications", "li.notification", "Load older", None),
        ("leaderboard", "/leaderboard", "table.board >> nth=0 >> tbody:not(.load-older) tr", "Load more", None),
    ],
)
def test_every_list_loads_older_items_in_place(crowd, new_context, shoot, name, path, items, label, total) -> None:
    who = crowd["owl"] if name == "notifications" else crowd["lark"]
    page = new_context(person=who).new_page()
    page.goto(path.format(owl=crowd["owl"].id))
    navigations = watch_navigations(page)

    counts = load_older_until_done(page, items, label)

    assert len(counts) >= 2, f"{name}: no second page"
    assert counts == sorted(set(counts)), f"{name}: a click did not add items: {counts}"
    if total is not None:
        assert counts[-1] == total, f"{name}: {counts}"
    assert_stayed(page, navigations)
    # The first new item has the focus the clicked link had: the keyboard goes on from there.
    # (htmx moves it once the new items have settled, a moment after they appear.)
    page.wait_for_function("() => document.activeElement && document.activeElement.matches('[autofocus]')")
    shoot(page, f"lists-load-older-{name}")


def test_without_javascript_the_buttons_are_forms_and_load_older_is_a_link(crowd, browser, site, artifacts) -> None:
    context = browser.new_context(base_url=site.base_url, java_script_enabled=False)
    try:
        page = context.new_page()
        log_in(page, crowd["lark"])
        page.goto("/?tab=everyone")
        card = page.locator("article.post-card").first
        title = card.get_by_role("heading").inner_text()
        card.get_by_role("button", name=f"Like {title}").click()
        expect(page).to_have_url(re.compile(r"/\?tab=everyone#post-\d+$"))  # back where it was
        expect(page.locator("article.post-card", has_text=title).get_by_role("button", name="Unlike")).to_be_visible()

        page.get_by_role("link", name="Load older").click()
        expect(page).to_have_url(re.compile(r"/\?before=[0-9]+-[0-9]+&tab=everyone$"))
        expect(page.locator("article.post-card")).to_have_count(20)
        page.screenshot(path=artifacts / "lists-no-javascript.png", full_page=True)
    finally:
        context.close()


def test_a_refused_click_leaves_the_card_as_it_was_and_says_why(crowd, site, new_context, shoot) -> None:
    swift = Person("swift")
    site.create_user(email=swift.email, username=swift.username, password=swift.password)
    context = new_context(person=swift)
    page = context.new_page()
    page.goto("/?tab=everyone")
    card = page.locator("article.post-card").first
    title = card.get_by_role("heading").inner_text()
    like = card.get_by_role("button", name=f"Like {title}")

    # Spend the person's budget for likes and follows (30 at once) from this page, as a
    # script of theirs could; the next click is refused with a 429.
    statuses = page.evaluate(
        """async (form) => {
          const statuses = [];
          for (let n = 0; n < 40; n++) {
            const body = new FormData(form);
            const response = await fetch(form.action, {method: "POST", body, credentials: "same-origin"});
            statuses.push(response.status);
          }
          return statuses;
        }""",
        card.locator("form.like").element_handle(),
    )
    assert 429 in statuses, statuses
    like.click()
    expect(page.locator("#toasts")).to_contain_text("Too many actions at once: try again in")
    expect(card.get_by_role("button", name=f"Like {title}")).to_be_visible()  # the card as it was
    shoot(page, "lists-refused-429")


def test_a_click_whose_csrf_cookie_is_gone_is_refused_and_says_so(crowd, site, new_context) -> None:
    petrel = Person("petrel")
    site.create_user(email=petrel.email, username=petrel.username, password=petrel.password)
    context = new_context(person=petrel)
    page = context.new_page()
    page.goto("/?tab=everyone")
    card = page.locator("article.post-card").first
    context.clear_cookies(name="csrftoken")  # an expired or cleared cookie: the form's token no longer matches

    card.locator("form.like button").click()

    expect(page.locator("#toasts")).to_contain_text("That was refused: reload the page and try again.")
    expect(card.get_by_role("button", name=re.compile(r"^Like "))).to_be_visible()  # the card as it was
