"""The API docs in a real browser: operations grouped by area, and a way back to the site."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

AREAS = ["auth", "posts", "people", "feed", "notifications", "jobs"]


def test_the_docs_list_the_areas_in_order_and_lead_back_to_the_site(new_context, shoot) -> None:
    page = new_context().new_page()
    page.goto("/api/docs")
    sections = page.locator(".opblock-tag-section h3")
    expect(sections.first).to_be_visible(timeout=15_000)
    assert [text.strip().split()[0] for text in sections.all_inner_texts()] == AREAS
    shoot(page, "api-docs-areas")

    expect(page.get_by_role("link", name="Back to the site")).to_have_attribute("href", "/")
