"""Act where you read, page through everything: the site's post cards, follow buttons and
"Load older" lists, with and without JavaScript (htmx's `HX-Request` answers), and the
cursor APIs under them. Real Redis, real database."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import Follow
from feeds.services import follow_create
from posts.models import Like
from posts.services import post_create, post_like

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def publish(django_capture_on_commit_callbacks):
    def publish(author, title: str):
        with django_capture_on_commit_callbacks(execute=True):
            return post_create(author=author, title=title, content=f"About {title}")

    return publish


@pytest.fixture
def follow(django_capture_on_commit_callbacks):
    def follow(follower, followee) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            follow_create(follower=follower, followee=followee)

    return follow


@pytest.fixture
def small_pages(monkeypatch):
    """Pages of two, so a handful of rows makes several pages."""
    import feeds.views
    import posts.views

    monkeypatch.setattr(posts.views, "FEED_COUNT_DEFAULT", 2)
    monkeypatch.setattr(posts.views, "LEADERBOARD_PAGE", 2)
    monkeypatch.setattr(feeds.views, "PEOPLE_PAGE", 2)


def load_older_href(html: str) -> str | None:
    match = re.search(r'class="load-older"[^>]*>\s*(?:<tr><td[^>]*>)?<a [^>]*href="([^"]+)"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def page_through(client, path: str) -> list[str]:
    """Every "Load older" answer htmx would fetch after `path`'s first page, as htmx asks for it."""
    first = client.get(path).content.decode()
    fragments, href = [], load_older_href(first)
    while href:
        response = client.get(path.split("?")[0] + href, **HTMX)
        assert response.status_code == 200
        assert "HX-Request" in response["Vary"]
        fragment = response.content.decode()
        assert "<html" not in fragment
        assert "<h1" not in fragment
        fragments.append(fragment)
        href = load_older_href(fragment)
        assert len(fragments) < 20
    return [first, *fragments]


# --- Like in place ---------------------------------------------------------------------------


def test_every_post_card_has_its_like_button_and_count(client, ada, bob, publish, follow):
    follow(bob, ada)
    liked, other = publish(ada, "liked one"), publish(ada, "other one")
    post_like(post=liked, user=bob)
    client.force_login(bob)

    for path in ("/", "/?tab=everyone", f"/users/{ada.pk}"):
        html = client.get(path).content.decode()
        like_forms = re.findall(r'<form method="post" action="/posts/(\d+)/like" class="like".*?</form>', html, re.S)
        assert sorted(like_forms) == sorted([str(liked.pk), str(other.pk)]), path
        assert re.search(rf'action="/posts/{liked.pk}/like".*?>Unlike<.*?1 like<', html, re.S), path
        assert re.search(rf'action="/posts/{other.pk}/like".*?>Like<.*?0 likes<', html, re.S), path


def test_an_author_sees_the_count_of_their_own_posts_but_no_button(client, ada, publish):
    publish(ada, "mine")
    client.force_login(ada)

    html = client.get("/?tab=everyone").content.decode()

    assert "0 likes" in html
    assert 'class="like" hx-post' not in html


def test_liking_through_htmx_answers_the_button_as_it_now_is(client, ada, bob, publish):
    post = publish(ada, "a post")
    client.force_login(bob)

    liked = client.post(f"/posts/{post.pk}/like", {"next": "/?tab=everyone#post-1"}, **HTMX)
    unliked = client.post(f"/posts/{post.pk}/like", {"action": "unlike", "next": "/"}, **HTMX)

    assert liked.status_code == 200
    assert ">Unlike<" in liked.content.decode()
    assert "1 like<" in liked.content.decode()
    assert 'value="/?tab=everyone#post-' in liked.content.decode()  # the next no-JS click still returns there
    assert ">Like<" in unliked.content.decode()
    assert "0 likes<" in unliked.content.decode()
    assert not Like.objects.filter(post=post, user=bob).exists()


def test_without_javascript_a_like_returns_to_the_page_it_was_on(client, ada, bob, publish):
    post = publish(ada, "a post")
    client.force_login(bob)

    response = client.post(f"/posts/{post.pk}/like", {"next": f"/users/{ada.pk}?before=1-1#post-{post.pk}"})
    elsewhere = client.post(f"/posts/{post.pk}/like", {"next": "https://evil.example/"})

    assert response.status_code == 302
    assert response["Location"] == f"/users/{ada.pk}?before=1-1#post-{post.pk}"
    assert elsewhere["Location"] == f"/posts/{post.pk}"  # never off the site
    assert Like.objects.filter(post=post, user=bob).count() == 1


def test_liking_ones_own_post_in_place_is_a_400_beside_the_button(client, ada, publish):
    post = publish(ada, "mine")
    client.force_login(ada)

    response = client.post(f"/posts/{post.pk}/like", {"next": "/"}, **HTMX)

    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()
    assert not Like.objects.exists()


def test_a_logged_out_htmx_click_is_sent_to_the_login_page_not_swapped_in(client, ada, publish):
    post = publish(ada, "a post")

    response = client.post(f"/posts/{post.pk}/like", {"next": "/?tab=everyone"}, **HTMX)

    assert response["HX-Redirect"] == "/login?next=%2F%3Ftab%3Deveryone"
    assert not Like.objects.exists()


# --- Follow in place -------------------------------------------------------------------------


def test_following_through_htmx_answers_the_button_and_the_profiles_count(client, ada, bob):
    client.force_login(bob)

    followed = client.post(f"/users/{ada.pk}/follow", {"next": f"/users/{ada.pk}", "show_count": "1"}, **HTMX)
    html = followed.content.decode()

    assert followed.status_code == 200
    assert ">Unfollow<" in html
    assert 'id="followers-count"' in html
    assert 'hx-swap-oob="true"' in html
    assert "1 follower<" in html
    assert Follow.objects.filter(follower=bob, followee=ada).exists()

    listed = client.post(f"/users/{ada.pk}/follow", {"action": "unfollow", "next": "/"}, **HTMX).content.decode()
    assert ">Follow<" in listed
    assert "followers-count" not in listed
    assert not Follow.objects.exists()


def test_without_javascript_a_follow_returns_to_the_list_it_was_on(client, ada, bob):
    client.force_login(bob)

    response = client.post(f"/users/{ada.pk}/follow", {"next": f"/users/{bob.pk}/followers"})

    assert response["Location"] == f"/users/{bob.pk}/followers"


def test_following_oneself_in_place_is_a_400(client, ada):
    client.force_login(ada)

    response = client.post(f"/users/{ada.pk}/follow", {"next": "/"}, **HTMX)

    assert response.status_code == 400
    assert not Follow.objects.exists()


# --- Load older on every list ----------------------------------------------------------------


def test_everyone_pages_through_every_post_once(client, ada, publish, small_pages):
    titles = [publish(ada, f"post {n}").title for n in range(5)]

    pages = page_through(client, "/?tab=everyone")

    shown = [title for page in pages for title in re.findall(r">(post \d)</a></h3>", page)]
    assert shown == list(reversed(titles))
    assert len(pages) == 3


def test_the_following_tab_pages_through_the_timeline(client, ada, bob, publish, follow, small_pages):
    follow(bob, ada)
    titles = [publish(ada, f"post {n}").title for n in range(3)]
    client.force_login(bob)

    pages = page_through(client, "/")

    assert [t for page in pages for t in re.findall(r">(post \d)</a></h3>", page)] == list(reversed(titles))


def test_a_profile_pages_past_its_written_through_list(client, ada, publish, small_pages, monkeypatch):
    import posts.keys

    monkeypatch.setattr(posts.keys, "RECENT_POSTS_LIMIT", 3)  # the list Redis keeps; older ones are queried
    titles = [publish(ada, f"post {n}").title for n in range(7)]

    pages = page_through(client, f"/users/{ada.pk}")

    assert [t for page in pages for t in re.findall(r">(post \d)</a></h3>", page)] == list(reversed(titles))


def test_followers_and_following_page_with_follow_buttons(client, make_user, ada, bob, follow, small_pages):
    fans = [make_user(username=f"fan{n}") for n in range(3)]
    for fan in fans:
        follow(fan, ada)
    follow(bob, fans[0])
    client.force_login(bob)

    pages = page_through(client, f"/users/{ada.pk}/followers")
    following = client.get(f"/users/{fans[0].pk}/following").content.decode()

    listed = [name for page in pages for name in re.findall(r">@(fan\d)</a>", page)]
    assert listed == ["fan2", "fan1", "fan0"]  # newest follow first
    assert re.search(rf'action="/users/{fans[0].pk}/follow".*?>Unfollow<', pages[-1], re.S)  # bob follows fan0
    assert re.search(rf'action="/users/{fans[2].pk}/follow".*?>Follow<', pages[0], re.S)
    assert "@ada" in following


def test_the_activity_page_pages_with_titles_and_people(
    client, ada, bob, publish, follow, small_pages, django_capture_on_commit_callbacks
):
    follow(ada, bob)
    publish(ada, "a post")
    liked = publish(bob, "bob's post")
    with django_capture_on_commit_callbacks(execute=True):
        post_like(post=liked, user=ada)

    pages = page_through(client, f"/users/{ada.pk}/activity")
    text = " ".join(pages)

    assert [re.sub(r"\s+", " ", line) for line in re.findall(r"(Liked|Posted|Followed) <a", text)] == [
        "Liked",
        "Posted",
        "Followed",
    ]
    assert "bob&#x27;s post" in text
    assert "a post" in text
    assert "@bob" in text


def test_notifications_page_with_load_older(client, ada, bob, make_user, follow, monkeypatch):
    import feeds.notification_views

    monkeypatch.setattr(feeds.notification_views, "PAGE_SIZE", 2)
    for n in range(3):
        follow(make_user(username=f"fan{n}"), ada)
    client.force_login(ada)

    pages = page_through(client, "/notifications")

    assert [n for page in pages for n in re.findall(r"@(fan\d) followed you", page)] == ["fan2", "fan1", "fan0"]


def test_the_leaderboard_pages_by_rank(client, make_user, publish, small_pages):
    fans = [make_user(username=f"fan{n}") for n in range(5)]
    for n, author in enumerate(fans[:4]):
        post = publish(author, f"post {n}")
        for liker in fans[: n + 1]:
            if liker != author:
                post_like(post=post, user=liker)

    pages = page_through(client, "/leaderboard")

    ranks = [int(rank) for page in pages for rank in re.findall(r"<td>(\d+)</td><td><a", page)]
    assert ranks == [1, 2, 3]  # three people have likes; two to a page
    assert "Load more" in pages[0]


def test_a_list_read_costs_one_query_for_the_like_buttons(client, ada, bob, publish, django_assert_max_num_queries):
    for n in range(5):
        publish(ada, f"post {n}")
    client.force_login(bob)
    client.get("/?tab=everyone")  # warm the posts' cache

    with CaptureQueriesContext(connection) as queries:
        client.get("/?tab=everyone")

    like_queries = [q["sql"] for q in queries.captured_queries if "posts_like" in q["sql"]]
    assert len(like_queries) == 1


# --- The cursor APIs under the lists ----------------------------------------------------------


def test_get_api_posts_pages_everyones_posts_by_cursor(client, ada, bob, publish):
    titles = [publish(author, f"post {n}").title for n, author in enumerate([ada, bob, ada])]

    first = client.get("/api/posts", {"count": 2}).json()
    second = client.get("/api/posts", {"count": 2, "before": first["next"]}).json()
    bad = client.get("/api/posts", {"before": "yesterday"})

    assert [item["post"]["title"] for item in first["items"] + second["items"]] == list(reversed(titles))
    assert second["next"] is None
    assert bad.status_code == 400
    assert "error" in bad.json()


def test_api_user_posts_pages_past_the_recent_list(client, ada, publish, monkeypatch):
    import posts.keys

    monkeypatch.setattr(posts.keys, "RECENT_POSTS_LIMIT", 2)
    titles = [publish(ada, f"post {n}").title for n in range(5)]

    seen, before = [], None
    for _ in range(5):
        body = client.get(f"/api/users/{ada.pk}/posts", {"count": 2, **({"before": before} if before else {})}).json()
        seen += [post["title"] for post in body["posts"]]
        before = body["next"]
        if before is None:
            break

    assert seen == list(reversed(titles))


def test_api_leaderboard_pages_by_start(client, ada, bob, make_user, publish):
    carol = make_user(username="carol")
    post_like(post=publish(ada, "a"), user=bob)
    post_like(post=publish(bob, "b"), user=carol)

    first = client.get("/api/leaderboard", {"count": 1}).json()
    second = client.get("/api/leaderboard", {"count": 1, "start": first["next"]}).json()
    past = client.get("/api/leaderboard", {"count": 1, "start": 10}).json()

    assert [e["rank"] for e in first["top"] + second["top"]] == [1, 2]
    assert first["next"] == 1
    assert past == {**past, "top": [], "next": None}


def test_a_cursor_past_year_9999_pages_from_the_newest_post_not_a_500(client, ada, publish):
    # Redis stream ids take 64-bit milliseconds; Python's datetimes end in 9999.
    publish(ada, "a post")
    far = "5262056390250330-1026128346153"

    api = client.get("/api/posts", {"before": far})
    older = client.get(f"/api/users/{ada.pk}/posts", {"before": far})
    page = client.get("/", {"tab": "everyone", "before": far})

    assert api.status_code == 200
    assert [item["post"]["title"] for item in api.json()["items"]] == ["a post"]
    assert [post["title"] for post in older.json()["posts"]] == ["a post"]
    assert page.status_code == 200
    assert "a post" in page.content.decode()
