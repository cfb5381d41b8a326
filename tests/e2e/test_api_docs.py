"""The API docs in a real browser: operations grouped by area, and a way back to the site."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.checks import assert_axe_clean

pytestmark = pytest.mark.e2e

AREAS = ["auth", "posts", "people", "feed", "notifications", "jobs"]

# Swagger UI draws the page from its own bundle and style sheet, which Kestrel serves as
# shipped; what axe finds in them is Swagger UI's to fix. Every other rule still runs.
SWAGGER_UI_FAILS = {
    "color-contrast": "Swagger UI's palette: white on its method colours, its link blue on #fafafa",
    "nested-interactive": "each operation's summary is a button holding the operation's own link",
    "target-size": "those operation links are 19 px high, one against the next",
}


def test_the_docs_list_the_areas_in_order_and_lead_back_to_the_site(new_context, shoot) -> None:
    page = new_context().new_page()
    page.goto("/api/docs")
    sections = page.locator(".opblock-tag-section h3")
    expect(sections.first).to_be_visible(timeout=15_000)
    assert [text.strip().split()[0] for text in sections.all_inner_texts()] == AREAS
    shoot(page, "api-docs-areas")

    expect(page.get_by_role("link", name="Back to the site")).to_have_attribute("href", "/")


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_the_docs_pass_the_wcag_rules_swagger_ui_does_not_break(new_context, phone: bool) -> None:
    page = new_context(phone=phone).new_page()
    page.goto("/api/docs")
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    assert page.locator("html").get_attribute("lang") == "en"
    assert_axe_clean(page, skip=SWAGGER_UI_FAILS)
    page.locator(".opblock-post .opblock-summary").first.click()  # an operation opened: its example body
    expect(page.locator(".opblock-body .highlight-code, .opblock-body .body-param__example").first).to_be_visible()
    assert_axe_clean(page, skip=SWAGGER_UI_FAILS)
