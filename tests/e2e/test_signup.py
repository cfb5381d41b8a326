"""Keeping what people typed, in a real browser: every sign-up problem in one round, the
password rules before the first attempt, and character counters that follow the typing."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.checks import assert_accessible, assert_no_horizontal_scroll
from tests.e2e.people import Corner

pytestmark = pytest.mark.e2e

TITLE_MAX = 200  # posts.models.TITLE_MAX_LENGTH
CONTENT_MAX = 10_000  # posts.models.CONTENT_MAX_LENGTH
ERROR_RED = "rgb(192, 57, 43)"  # static/css/kestrel.css's error colour


def test_a_sign_up_with_several_problems_shows_them_all_at_once(corner: Corner, new_context, shoot) -> None:
    page = new_context().new_page()
    page.goto("/signup")
    password = page.get_by_label("Password")

    # The rules come first, and the password field is described by them.
    rules = page.locator("#id_password_helptext")
    expect(rules).to_be_visible()
    expect(rules.get_by_role("listitem")).to_have_count(4)  # config.settings.AUTH_PASSWORD_VALIDATORS
    expect(rules).to_contain_text("at least 8 characters")
    expect(password).to_have_accessible_description(re.compile("must contain at least 8 characters"))
    shoot(page, "signup-rules")

    page.get_by_label("Email").fill(corner.writer.email)  # taken
    page.get_by_label("Username").fill("no spaces!")  # not a handle
    password.fill("kite7")  # too short
    page.get_by_role("button", name="Create account").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Sign up")
    expect(page.locator("#id_email_error")).to_have_text("A user with that email already exists.")
    expect(page.locator("#id_username_error")).to_contain_text("Enter a valid username")
    expect(page.locator("#id_password_error")).to_contain_text("This password is too short.")
    expect(page.get_by_label("Email")).to_have_value(corner.writer.email)
    expect(page.get_by_label("Username")).to_have_value("no spaces!")
    expect(password).to_have_value("")  # a password is never sent back
    expect(password).to_have_accessible_description(re.compile("too short"))
    expect(page.get_by_role("button", name="Log out")).to_have_count(0)  # no account, no session
    assert_accessible(page)
    shoot(page, "signup-all-errors")


def check_title_counter(page: Page, *, tap: bool) -> None:
    title = page.get_by_label("Title")
    counter = page.locator("#id_title_counter")
    expect(counter).to_have_text(f"0/{TITLE_MAX} characters")
    expect(title).to_have_accessible_description(re.compile(f"0/{TITLE_MAX} characters"))
    if tap:
        title.tap()
    else:
        title.click()
    page.keyboard.type("Kestrel")
    expect(counter).to_have_text(f"7/{TITLE_MAX} characters")
    page.keyboard.press("Backspace")
    expect(counter).to_have_text(f"6/{TITLE_MAX} characters")
    expect(counter).not_to_have_class(re.compile(r"\bover\b"))


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_the_compose_counter_follows_the_typing(corner: Corner, new_context, shoot, phone: bool) -> None:
    page = new_context(phone=phone, person=corner.writer).new_page()
    page.goto("/")
    check_title_counter(page, tap=phone)
    if phone:
        assert_no_horizontal_scroll(page)
    shoot(page, f"counter-typing-{'phone' if phone else 'desktop'}")


def test_the_counter_counts_as_the_server_and_turns_to_an_error_past_the_limit(
    corner: Corner, new_context, shoot
) -> None:
    page = new_context(person=corner.writer).new_page()
    page.goto("/")
    title, counter = page.get_by_label("Title"), page.locator("#id_title_counter")
    content, content_counter = page.get_by_label("What's on your mind?"), page.locator("#id_content_counter")

    # An emoji is one character and a line break two ("\r\n" on the way), as Django counts them.
    title.fill("Kestrel 🐦")
    expect(counter).to_have_text(f"9/{TITLE_MAX} characters")
    content.fill("one\ntwo")
    expect(content_counter).to_have_text(f"8/{CONTENT_MAX} characters")

    # With the counter running, a paste is not cut at the limit: it is shown as too long.
    title.fill("t" * (TITLE_MAX + 1))
    expect(title).to_have_value("t" * (TITLE_MAX + 1))
    expect(counter).to_have_text(f"{TITLE_MAX + 1}/{TITLE_MAX} characters")
    expect(counter).to_have_class(re.compile(r"\bover\b"))
    expect(counter).to_have_css("color", ERROR_RED)
    # Said once, politely, not at every keystroke.
    expect(page.get_by_role("status").filter(has_text="Title: 1 character too many")).to_have_count(1)
    shoot(page, "counter-over-the-limit")

    # And the server, which counts alike, keeps the draft and says why.
    page.get_by_role("button", name="Post").click()
    expect(page.locator("#id_title_error")).to_contain_text(f"at most {TITLE_MAX} characters")
    expect(page.locator("#id_title_counter")).to_have_class(re.compile(r"\bover\b"))
    expect(page.get_by_label("What's on your mind?")).to_have_value("one\ntwo")
    expect(page.locator("#id_content_counter")).to_have_text(f"8/{CONTENT_MAX} characters")

    title.fill("t" * TITLE_MAX)
    expect(counter).to_have_text(f"{TITLE_MAX}/{TITLE_MAX} characters")
    expect(counter).not_to_have_class(re.compile(r"\bover\b"))
    expect(page.get_by_role("status").filter(has_text="Title: 0 characters left")).to_have_count(1)


def test_the_profile_counters_follow_the_typing(corner: Corner, new_context) -> None:
    page = new_context(person=corner.reader).new_page()
    page.goto(f"/users/{corner.reader.id}")
    page.locator("summary", has_text="Edit profile").click()
    bio, counter = page.get_by_label("Bio"), page.locator("#id_bio_counter")
    expect(counter).to_have_text(re.compile(r"^0/500 characters$"))
    bio.fill("Watches the meadow.")
    expect(counter).to_have_text("19/500 characters")
    assert_accessible(page)
