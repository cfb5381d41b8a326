"""The notifications page in a real browser: an item leads to what it is about, and
"Mark all read" brings you back to the page."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.people import Corner

pytestmark = pytest.mark.e2e


def test_a_notification_leads_to_what_it_is_about(corner: Corner, new_context, shoot) -> None:
    page = new_context(person=corner.writer).new_page()
    page.goto("/notifications")
    expect(page.get_by_role("heading", level=1)).to_have_text("Notifications")
    # Relative times ("just now", "5 min": the corner was made when the suite started),
    # with the full date on hover.
    when = page.locator("li.notification time").first
    expect(when).to_have_text(re.compile(r"^(just now|\d+ min)$"))
    expect(when).to_have_attribute("title", re.compile(r"^\d{1,2} \w{3} \d{4}, \d\d:\d\d$"))
    shoot(page, "notifications")

    page.get_by_role("link", name=re.compile("liked")).click()
    expect(page).to_have_url(re.compile(rf"/posts/{corner.post_id}$"))

    page.goto("/notifications")
    page.get_by_role("link", name=re.compile("followed you")).click()
    expect(page).to_have_url(re.compile(rf"/users/{corner.reader.id}$"))


def test_mark_all_read_returns_to_the_page_with_nothing_unread(corner: Corner, new_context) -> None:
    page = new_context(person=corner.writer).new_page()
    page.goto("/notifications")
    page.get_by_role("button", name="Mark all read").click()
    expect(page).to_have_url(re.compile(r"/notifications$"))
    expect(page.locator(".notification.unread")).to_have_count(0)
