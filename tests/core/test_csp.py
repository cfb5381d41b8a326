"""The Content-Security-Policy header: on pages, the API and Swagger UI, and strict enough to matter.

The browser suite (tests/e2e) checks that no page it visits meets a violation; these
check the header itself and that the HTML Kestrel renders needs nothing it forbids.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import django_rq
import drf_spectacular
import pytest
from django.conf import settings
from django.template.loader import render_to_string
from django.test import Client
from django.urls import reverse

from posts.services import post_create

pytestmark = pytest.mark.django_db

TEMPLATES = Path(settings.BASE_DIR) / "templates"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\ssrc=)[^>]*>(.*?)</script>", re.S)
INLINE_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.S)
# An event handler attribute (onclick=, onsubmit=...), a style attribute or a javascript: URL.
INLINE_ATTRIBUTE = re.compile(r"""<[^>]*\s(on[a-z]+|style)\s*=|href\s*=\s*["']?\s*javascript:""", re.I)


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


def hash_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def assert_strict(policy: dict[str, list[str]]) -> None:
    assert policy["script-src"][0] == "'self'"
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    assert "'unsafe-inline'" not in policy["style-src"]
    assert policy["default-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]


def assert_runs_under(html: str, policy: dict[str, list[str]]) -> None:
    """`html` needs no inline script, handler or style attribute; each <style> is allowed by its hash."""
    assert INLINE_SCRIPT.findall(html) == []
    assert INLINE_ATTRIBUTE.findall(html) == []
    for style in INLINE_STYLE.findall(html):
        assert hash_source(style) in policy["style-src"], style[:80]


@pytest.fixture
def member(make_user):
    user = make_user(is_staff=True)
    client = Client()
    client.force_login(user)
    client.post_id = post_create(author=user, title="Hello", content="First post").pk
    return client


@pytest.mark.parametrize("page", ["home", "leaderboard", "reports", "notifications", "ops", "post"])
def test_every_page_has_a_strict_policy_it_runs_under(member, page):
    url = reverse("post-detail", args=[member.post_id]) if page == "post" else reverse(page)

    response = member.get(url)

    assert response.status_code == 200
    policy = directives(response)
    assert_strict(policy)
    assert_runs_under(response.content.decode(), policy)


@pytest.mark.parametrize("url", ["/login", "/signup"])
def test_pages_for_visitors_have_the_policy(client, url):
    response = client.get(url)

    assert_strict(directives(response))
    assert_runs_under(response.content.decode(), directives(response))


@pytest.mark.parametrize("url", ["/api/leaderboard", "/api/me", "/api/nope"])
def test_api_answers_have_the_policy(client, url):
    response = client.get(url)

    assert response["Content-Type"] == "application/json"
    assert_strict(directives(response))


def test_swagger_ui_runs_under_the_policy_with_its_script_a_file(client):
    response = client.get(reverse("api-docs"))

    assert response.status_code == 200
    policy = directives(response)
    assert_strict(policy)
    html = response.content.decode()
    assert_runs_under(html, policy)
    (script,) = re.findall(r'<script src="([^"]*\?script=[^"]*)"', html)
    started = client.get(script.replace("&amp;", "&"))
    assert started.status_code == 200
    assert started["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in started.content.decode()


def test_no_template_holds_an_inline_script_or_a_style_the_policy_does_not_name():
    policy = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]
    for template in TEMPLATES.rglob("*.html"):
        html = template.read_text()
        assert INLINE_SCRIPT.findall(html) == [], template
        assert INLINE_ATTRIBUTE.findall(html) == [], template
        for style in INLINE_STYLE.findall(html):
            assert hash_source(style) in policy["style-src"], template


def test_the_hashed_blocks_of_installed_packages_are_the_ones_allowed():
    # Upgrading drf-spectacular or django-rq may change these blocks: this says so.
    policy = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]
    swagger = Path(drf_spectacular.__file__).parent / "templates" / "drf_spectacular" / "swagger_ui.html"
    (style,) = INLINE_STYLE.findall(swagger.read_text())
    assert hash_source(style) in policy["style-src"]
    rq_templates = [t.read_text() for t in (Path(django_rq.__file__).parent / "templates").rglob("*.html")]
    rq_scripts = {hash_source(s) for html in rq_templates for s in INLINE_SCRIPT.findall(html) if s.strip()}
    rq_styles = {hash_source(s) for html in rq_templates for s in INLINE_STYLE.findall(html) if s.strip()}
    assert rq_scripts
    assert rq_styles  # the statistics, confirmation and detail pages'
    assert rq_scripts <= set(policy["script-src"])
    assert rq_styles <= set(policy["style-src"])


def test_error_pages_rendered_without_a_request_run_under_the_policy():
    policy = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]

    for name in ("error.html", "500.html"):
        assert_runs_under(render_to_string(name, {"status": 503, "message": "Redis is unavailable"}), policy)


def test_the_header_built_once_is_the_one_django_csp_builds_and_follows_a_changed_policy(rf, settings):
    from csp.middleware import CSPMiddleware as DjangoCSPMiddleware
    from django.http import HttpResponse

    from core.csp import CSPMiddleware

    def respond(middleware_class, use_nonce=False):
        middleware = middleware_class(lambda request: HttpResponse())
        request = rf.get("/api/feed")
        middleware.process_request(request)
        if use_nonce:
            str(request.csp_nonce)
        return request, middleware.process_response(request, HttpResponse())

    _, expected = respond(DjangoCSPMiddleware)
    for _ in range(2):  # built, then from the copy
        _, response = respond(CSPMiddleware)
        assert response["Content-Security-Policy"] == expected["Content-Security-Policy"]
    # A response whose request used a nonce is django-csp's own (the nonce goes into
    # the policies that name one).
    _, response = respond(CSPMiddleware, use_nonce=True)
    assert (
        response["Content-Security-Policy"]
        == respond(DjangoCSPMiddleware, use_nonce=True)[1]["Content-Security-Policy"]
    )

    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {"default-src": ["'none'"]}}
    _, response = respond(CSPMiddleware)
    assert response["Content-Security-Policy"] == "default-src 'none'"
