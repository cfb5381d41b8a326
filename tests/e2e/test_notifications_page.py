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
    expect(page.get_by_text("just now").first).to_be_visible()
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
