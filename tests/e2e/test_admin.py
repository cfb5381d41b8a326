"""The Django admin against WCAG 2 A/AA in a real browser, at desktop and phone sizes.

The admin's markup and style sheets are Django's, served as shipped; Kestrel adds its
branding, its log-in by email and its model admins. A rule a page fails only through
Django's own CSS or widgets is skipped on that page, saying what fails it; every other
rule runs, so what Kestrel adds is held to the same rules as its own pages.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.checks import assert_axe_clean
from tests.e2e.people import Person
from tests.live import LiveKestrel

pytestmark = pytest.mark.e2e

# Django's changelist filters: each choice is a 20 px high link, stacked one against the next.
FILTER_LINKS = {"target-size": "Django's changelist filter links are 20 px high, one against the next"}


@pytest.fixture(scope="module")
def superuser(site: LiveKestrel) -> Person:
    """A superuser, so the admin shows every model Kestrel registers. Not the shared
    corner: asked for here, first in the session, it would be made a minute or more before
    the tests that read its notifications as "just now"."""
    falcon = Person("falcon")
    site.create_user(email=falcon.email, username=falcon.username, password=falcon.password, is_staff=True)
    site.shell("from accounts.models import User\nUser.objects.filter(username='falcon').update(is_superuser=True)")
    return falcon


@pytest.mark.parametrize("phone", [False, True], ids=["desktop", "phone"])
def test_the_admin_passes_the_wcag_rules_djangos_own_css_does_not_break(
    phone: bool, superuser: Person, new_context, shoot
) -> None:
    login = new_context(phone=phone).new_page()
    login.goto("/admin/login/")
    expect(login.get_by_label("Email")).to_be_visible()  # Kestrel's log-in form, by email
    assert_axe_clean(login)

    page = new_context(phone=phone, person=superuser).new_page()
    page.goto("/admin/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Kestrel administration")
    expect(page.get_by_role("link", name="Posts").first).to_be_visible()
    assert_axe_clean(page)
    shoot(page, f"admin-index-{'phone' if phone else 'desktop'}")

    page.goto("/admin/accounts/user/")
    expect(page.get_by_role("link", name="falcon", exact=True)).to_be_visible()
    assert_axe_clean(page, skip=FILTER_LINKS)

    page.goto("/admin/posts/post/add/")
    expect(page.get_by_label("Title")).to_be_visible()
    assert_axe_clean(page)


def test_the_queue_pages_run_under_the_content_security_policy(superuser: Person, new_context, shoot) -> None:
    # django-rq's pages carry inline styles, allowed by their hashes (config/settings.py);
    # the context's watcher fails the test on any violation.
    page = new_context(person=superuser).new_page()
    page.goto("/admin/rq/")
    expect(page.get_by_role("link", name="reports").first).to_be_visible()
    shoot(page, "admin-rq")
