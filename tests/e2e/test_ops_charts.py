"""The /ops charts in the browser: labelled axes in units, the value under the pointer,
the finger or the keyboard, and the auto-refresh toggle, on a desktop and on a phone.

The live Kestrel runs the cache and state roles on two Redis servers, as production
does, so the one-server note of development is absent here (tests/ops/test_charts.py
shows it on one server).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from tests.e2e.checks import assert_accessible, assert_no_horizontal_scroll
from tests.e2e.people import Corner
from tests.live import LiveKestrel

pytestmark = pytest.mark.e2e

CHARTS = 11
GROUPS = ("Cache role", "State role", "Kestrel and its queues")
MEMORY_VALUE = r"[\d.]+ [kMG]?B"
READOUT = re.compile(rf"^{MEMORY_VALUE} at \d\d:\d\d UTC, \d+ (s|min|h) ago$")


def open_ops(new_context: Callable[..., BrowserContext], corner: Corner, *, phone: bool = False) -> Page:
    page = new_context(phone=phone, person=corner.staff).new_page()
    page.goto("/ops")
    expect(page.get_by_role("heading", level=1)).to_have_text("Ops")
    return page


def state_memory(page: Page) -> Locator:
    return page.get_by_role("img", name=re.compile(r"^State role, memory used: latest "))


def readout_of(chart: Locator) -> Locator:
    return chart.locator("xpath=..").locator(".chart-tip")


def test_the_charts_are_grouped_by_role_with_units_and_axes(corner: Corner, new_context, shoot) -> None:
    page = open_ops(new_context, corner)

    for group in GROUPS:
        expect(page.get_by_role("heading", level=3, name=group, exact=True)).to_be_visible()
    charts = page.locator("#chart-groups svg.chart")
    expect(charts).to_have_count(CHARTS)
    memory = state_memory(page)
    expect(memory).to_have_attribute(
        "aria-label",
        re.compile(rf"latest {MEMORY_VALUE}, low {MEMORY_VALUE}, high {MEMORY_VALUE}, \d+ samples over "),
    )
    for label in (".chart-y-low", ".chart-y-high"):
        expect(memory.locator(label)).to_be_visible()
        expect(memory.locator(label)).to_have_text(re.compile(rf"^{MEMORY_VALUE}$"))
    ratio = page.get_by_role("img", name=re.compile(r"^Cache role, hit ratio"))
    expect(ratio.locator(".chart-y-low")).to_have_text("0 %")
    expect(ratio.locator(".chart-y-high")).to_have_text("100 %")
    errors = page.get_by_role("img", name=re.compile(r"^Kestrel and its queues, command errors"))
    expect(errors.locator(".chart-y-low")).to_have_text("0/min")
    # The time axis under every chart: from the first sample to now.
    expect(page.locator("#chart-groups .chart-x-end")).to_have_text(["now"] * CHARTS)
    expect(memory.locator(".chart-x-start")).to_have_text(re.compile(r"^\d+ (s|min|h) ago$"))
    expect(memory.locator(".chart-x-start")).to_be_visible()
    # Two Redis servers here: nothing to say about one shared server.
    expect(page.locator("#one-server-note")).to_have_count(0)
    assert_accessible(page)
    shoot(page, "ops-charts")


def test_hovering_or_focusing_a_chart_shows_the_sample_with_its_unit(corner: Corner, new_context, shoot) -> None:
    page = open_ops(new_context, corner)
    memory = state_memory(page)
    readout = readout_of(memory)
    expect(readout).to_be_hidden()

    memory.scroll_into_view_if_needed()
    box = memory.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
    expect(readout).to_be_visible()
    expect(readout).to_have_text(READOUT)
    # A vertical line has no width, so Playwright never calls it visible: its attribute then.
    expect(memory.locator(".chart-cursor")).to_have_attribute("visibility", "visible")
    shoot(page, "ops-charts-hover")
    page.mouse.move(0, 0)
    expect(readout).to_be_hidden()

    # The keyboard: Tab reaches the chart, which reads its latest sample; Home the first.
    memory.focus()
    latest = re.search(rf"latest ({MEMORY_VALUE})", memory.get_attribute("aria-label") or "")
    assert latest is not None
    expect(readout).to_be_visible()
    expect(readout).to_have_text(re.compile(rf"^{re.escape(latest.group(1))} at "))
    page.keyboard.press("Home")
    first = (memory.get_attribute("data-values") or "").split("|")[0]
    expect(readout).to_have_text(re.compile(rf"^{re.escape(first)} at "))
    page.keyboard.press("Escape")
    expect(readout).to_be_hidden()


def test_the_auto_refresh_toggle_is_off_at_first_remembered_and_refreshes(corner: Corner, new_context) -> None:
    page = new_context(person=corner.staff).new_page()
    page.clock.install()  # the 30 s pass at once
    page.goto("/ops")
    toggle = page.get_by_label("Auto-refresh every 30 s")
    expect(toggle).to_be_visible()
    expect(toggle).not_to_be_checked()

    toggle.check()
    with page.expect_response(lambda answer: answer.url.endswith("/ops") and answer.request.resource_type == "fetch"):
        page.clock.run_for(30_000)
    expect(page.locator("#refresh-status")).to_have_text(re.compile(r"^Updated at \d\d:\d\d:\d\d UTC\.$"))
    # The charts drawn again still read out.
    state_memory(page).focus()
    expect(readout_of(state_memory(page))).to_have_text(READOUT)

    page.reload()
    expect(toggle).to_be_checked()
    toggle.uncheck()
    page.reload()
    expect(toggle).not_to_be_checked()


def test_without_javascript_there_is_no_dead_toggle(
    corner: Corner, new_context, browser: Browser, site: LiveKestrel, signed_in: dict[str, dict]
) -> None:
    new_context(person=corner.staff)  # logs the staff member in once, for the cookies
    context = browser.new_context(
        base_url=site.base_url, storage_state=signed_in[corner.staff.username], java_script_enabled=False
    )
    try:
        page = context.new_page()
        page.goto("/ops")
        expect(page.get_by_role("heading", level=1)).to_have_text("Ops")
        expect(page.get_by_label("Auto-refresh every 30 s")).to_be_hidden()
        memory = state_memory(page)
        expect(memory.locator(".chart-y-high")).to_be_visible()
        # The chart's own tooltip (<title>) says what the script's readout would.
        expect(memory.locator("title")).to_have_text(re.compile(r"^State role, memory used: latest "))
    finally:
        context.close()


def test_on_a_phone_the_charts_fit_and_a_tap_reads_a_sample(corner: Corner, new_context, shoot) -> None:
    page = open_ops(new_context, corner, phone=True)
    assert_no_horizontal_scroll(page)
    assert_accessible(page)
    memory = state_memory(page)
    memory.scroll_into_view_if_needed()
    box = memory.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 390
    expect(memory.locator(".chart-y-low")).to_be_visible()

    memory.tap()
    readout = readout_of(memory)
    expect(readout).to_have_text(READOUT)
    tip = readout.bounding_box()
    assert tip is not None
    assert tip["x"] >= 0
    assert tip["x"] + tip["width"] <= 390, f"the readout runs off the screen: {tip}"
    shoot(page, "ops-charts-phone")
