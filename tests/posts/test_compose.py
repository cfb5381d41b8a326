"""The home page's compose box keeps what people typed when a post is refused."""

from __future__ import annotations

import pytest

from posts.models import TITLE_MAX_LENGTH, Post

pytestmark = pytest.mark.django_db


def test_a_refused_post_keeps_its_draft_and_shows_the_error_beside_its_field(ada, as_ada):
    too_long = "t" * (TITLE_MAX_LENGTH + 1)

    response = as_ada.post("/posts/new", {"title": too_long, "content": "My carefully written body"})

    assert response.status_code == 400
    page = response.content.decode()
    assert "My carefully written body" in page  # the draft, as typed
    assert f'value="{too_long}"' in page
    assert 'id="id_title_error"' in page  # the error sits with the title
    assert 'id="id_content_error"' not in page
    assert not Post.objects.exists()


def test_a_title_of_only_spaces_is_refused_by_the_model_and_the_draft_stays(ada, as_ada):
    response = as_ada.post("/posts/new", {"title": "   ", "content": "kept"})

    assert response.status_code == 400
    assert "kept" in response.content.decode()
    assert not Post.objects.exists()


def test_a_good_post_still_goes_to_its_page(ada, as_ada):
    response = as_ada.post("/posts/new", {"title": "Fine", "content": "All good"})

    post = Post.objects.get()
    assert (response.status_code, response["Location"]) == (302, f"/posts/{post.pk}")
