"""A refused post in a real browser: the draft stays, the error sits beside its field."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.checks import assert_accessible
from tests.e2e.people import Corner

pytestmark = pytest.mark.e2e


def test_a_refused_post_keeps_the_draft(corner: Corner, new_context, shoot) -> None:
    page = new_context(person=corner.writer).new_page()
    page.goto("/")
    page.get_by_label("Title").fill("   ")  # only spaces: the browser sends it, Kestrel refuses it
    page.get_by_label("What's on your mind?").fill("A draft worth keeping")
    page.get_by_role("button", name="Post").click()

    expect(page.get_by_label("What's on your mind?")).to_have_value("A draft worth keeping")
    expect(page.locator("#id_title_error")).to_be_visible()
    assert_accessible(page)  # the error as shown: its colour, tied to its field
    shoot(page, "compose-refused")
