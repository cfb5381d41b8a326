"""Site pages of the posts app: the home page, posts, profiles, the leaderboard, reports.

Thin: each reads the same cached selectors as the API or calls one service, then
renders a template or redirects with a message. Pages that change something are POST
only (a GET is sent to the page with the button: core.views.post_only) and behind
@login_required (their request is an AuthenticatedHttpRequest).
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from accounts.selectors import follow_counts, follow_exists, user_profile, user_profiles
from accounts.services import ProfileBeingUpdated, user_update_profile
from core.types import AuthenticatedHttpRequest
from core.views import back_to, in_place, login_required_in_place, post_only, render_list
from feeds.selectors import FEED_COUNT_DEFAULT
from feeds.stream_ids import stream_id_or_raise
from jobs.services import QuotaExceeded
from posts import counters, leaderboard, reports, selectors, services
from posts.forms import PostForm, ProfileForm
from posts.models import Post


def home(request: HttpRequest) -> HttpResponse:
    """The home page: the compose box, then the Following or Everyone tab, paged by "Load older".

    Following (a logged-in reader's default) is the home timeline; Everyone (`?tab=everyone`,
    and all a visitor sees) is everyone's posts. Both page by `?before=<stream id>`; a
    malformed cursor shows the newest page.
    """
    return _home(request, compose=PostForm() if request.user.is_authenticated else None)


def _home(request: HttpRequest, *, compose: PostForm | None, status: int = 200) -> HttpResponse:
    before = _cursor(request.GET.get("before"))
    if request.user.is_authenticated and request.GET.get("tab") != "everyone":
        tab = "following"
        page = selectors.home_timeline_page(user_id=request.user.pk, count=FEED_COUNT_DEFAULT, before=before)
        empty = (
            "Nothing here yet: follow people from their profiles, or from Everyone, and their new posts show up here."
        )
    else:
        tab = "everyone"
        page = selectors.recent_posts_page(count=FEED_COUNT_DEFAULT, before=before)
        empty = "No posts yet."
    if before:
        empty = "No older posts."
    context = {"page": page, "tab": tab, "empty": empty, "compose": compose, "liked": _liked(request, page["items"])}
    return render_list(request, "home.html", "posts/_post_items.html", context, status=status)


def _cursor(value: str | None) -> str | None:
    try:
        ms, seq = stream_id_or_raise(value or "")
    except ValueError:
        return None  # none, or a mangled link: the newest page
    return f"{ms}-{seq}"


def _liked(request: HttpRequest, items: list[dict]) -> set[int]:
    # Which of a page's posts the reader likes, for their buttons: one query.
    if not request.user.is_authenticated or not items:
        return set()
    return selectors.post_ids_liked_by(user_id=request.user.pk, post_ids=[item["post"]["id"] for item in items])


@post_only("home")
@login_required
def post_compose(request: AuthenticatedHttpRequest) -> HttpResponse:
    """POST /posts/new: publish a post (posts.services.post_create) and show it.

    A rejected post shows the home page again (400) with the draft as typed and each
    error beside its field; nothing is written then.
    """
    form = PostForm(request.POST)
    if form.is_valid():
        try:
            post = services.post_create(author=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)  # the model's errors, each on its field
        else:
            messages.success(request, "Posted.")
            return redirect("post-detail", post_id=post.pk)
    return _home(request, compose=form, status=400)


def post_detail(request: HttpRequest, post_id: int) -> HttpResponse:
    """A post's page, counting a view: its views, unique viewers and the reader's like.

    The post is cache-aside (fails open); the view is counted in memory; the unique
    viewers are read from the state role (as of the last send). 404 for no such post.
    """
    post = selectors.post_detail(post_id=post_id)
    if post is None:
        raise Http404("No such post")
    pending = counters.record_post_view(post_id=post_id, viewer=counters.viewer_id(request))
    context = {
        "post": post,
        "views": post["viewCount"] + pending,
        "unique_viewers": counters.post_unique_viewers(post_id),
        "is_author": request.user.is_authenticated and request.user.pk == post["author"]["id"],
        "liked": {post_id}
        if request.user.is_authenticated and selectors.post_liked_by(post_id=post_id, user_id=request.user.pk)
        else set(),
    }
    return render(request, "posts/post_detail.html", context)


@post_only("post-detail")
@login_required_in_place
def post_like_toggle(request: AuthenticatedHttpRequest, post_id: int) -> HttpResponse:
    """POST /posts/<id>/like: like the post, or take the like back with action=unlike.

    From htmx, the button and count as they are now (posts/_like.html); without
    JavaScript, back to the page the button was on (`next`), else the post's page. A
    double click is harmless (the state asked for is the state it is in); liking one's
    own post is an error (a 400 beside the button, or a message).
    """
    post = get_object_or_404(Post.objects.select_related("author"), pk=post_id)
    error = None
    try:
        if request.POST.get("action") == "unlike":
            services.post_unlike(post=post, user=request.user)
        else:
            services.post_like(post=post, user=request.user)
    except (services.AlreadyLiked, services.NotLiked):
        pass  # a double click: the state the person wanted is the state it is in
    except ValidationError as exc:
        error = exc.messages[0]
    if in_place(request):
        post.refresh_from_db(fields=["like_count"])
        context = {
            "post": selectors.post_to_dict(post),
            "liked": {post_id} if selectors.post_liked_by(post_id=post_id, user_id=request.user.pk) else set(),
            "back": request.POST.get("next", "").split("#")[0],
            "error": error,
        }
        return render(request, "posts/_like.html", context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    return back_to(request, reverse("post-detail", args=[post_id]))


@post_only("post-detail")
@login_required
def post_delete(request: AuthenticatedHttpRequest, post_id: int) -> HttpResponse:
    """POST /posts/<id>/delete: the author deletes their post, then sees their profile.

    Anyone else gets an error message on the post's page; nothing is deleted.
    """
    post = get_object_or_404(Post, pk=post_id)
    try:
        services.post_delete(post=post, editor=request.user)
    except PermissionDenied:
        messages.error(request, "Only the author can delete this post.")
        return redirect("post-detail", post_id=post_id)
    messages.info(request, "Post deleted.")
    return redirect("profile", user_id=request.user.pk)


def profile(request: HttpRequest, user_id: int) -> HttpResponse:
    """A person's page: profile, follow counts, posts with "Load older", stats, leaderboard rank.

    The owner gets the edit form; another logged-in reader, the follow button. The first
    page of posts is the written-through recent list (posts.selectors.user_posts_page),
    the posts themselves come from their cache; every part fails open. 404 for no such
    (active) account.
    """
    person = user_profile(user_id=user_id)
    if person is None:
        raise Http404("No such person")
    before = _cursor(request.GET.get("before"))
    if in_place(request):  # "Load older": the posts only
        summaries, stats = selectors.user_posts_page(user_id=user_id, count=FEED_COUNT_DEFAULT, before=before), None
    else:
        summaries, stats = selectors.user_profile_posts(user_id=user_id, count=FEED_COUNT_DEFAULT, before=before)
    posts = selectors.post_details(post_ids=[summary["id"] for summary in summaries["posts"]])
    page = {"items": [{"post": post} for post in posts if post is not None], "next": summaries["next"]}
    context: dict[str, Any] = {
        "page": page,
        "liked": _liked(request, page["items"]),
        "empty": "No older posts." if before else "No posts yet.",
    }
    if in_place(request):  # "Load older": the posts only
        return render_list(request, "posts/profile.html", "posts/_post_items.html", context)
    is_owner = request.user.is_authenticated and request.user.pk == user_id
    follower = request.user if request.user.is_authenticated and not is_owner else None
    context |= {
        "person": person,
        "follows": follow_counts(user_id=user_id),
        "can_follow": follower is not None,
        "is_following": follower is not None and follow_exists(follower_id=follower.pk, followee_id=user_id),
        "stats": stats,
        "rank": leaderboard.leaderboard_entry(user_id=user_id),
        "form": ProfileForm(initial={"name": person["name"], "bio": person["bio"]}) if is_owner else None,
        "is_owner": is_owner,
    }
    return render_list(request, "posts/profile.html", "posts/_post_items.html", context)


def user_activity(request: HttpRequest, user_id: int) -> HttpResponse:
    """/users/<id>/activity: what someone did (posted, liked, followed), newest first, with
    "Load older" (posts.selectors.user_activity_page). 404 for no such (active) account."""
    person = user_profile(user_id=user_id)
    if person is None:
        raise Http404("No such person")
    before = _cursor(request.GET.get("before"))
    page = selectors.user_activity_page(user_id=user_id, count=FEED_COUNT_DEFAULT, before=before)
    post_ids = [item["targetId"] for item in page["items"] if item["action"] != "followed"]
    people_ids = [item["targetId"] for item in page["items"] if item["action"] == "followed"]
    posts = dict(zip(post_ids, selectors.post_details(post_ids=post_ids), strict=True))
    people = dict(zip(people_ids, user_profiles(user_ids=people_ids), strict=True))
    for item in page["items"]:
        item["target"] = (people if item["action"] == "followed" else posts).get(item["targetId"])
    context = {"person": person, "page": page, "empty": "Nothing older." if before else "Nothing yet."}
    return render_list(request, "posts/activity.html", "posts/_activity_items.html", context)


def _own_profile(request: HttpRequest) -> str:
    # The edit form is on one's own profile; a visitor has none, and goes home.
    return reverse("profile", args=[request.user.pk]) if request.user.is_authenticated else reverse("home")


@post_only(_own_profile)
@login_required
def profile_edit(request: AuthenticatedHttpRequest) -> HttpResponse:
    """POST /profile/edit: save the logged-in person's name and bio, back to their page.

    Validation errors, and a save racing another one (ProfileBeingUpdated), show as
    messages; nothing is written then.
    """
    form = ProfileForm(request.POST)
    if form.is_valid():
        try:
            user_update_profile(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        except ProfileBeingUpdated:
            messages.error(request, "Your profile is being saved from somewhere else; please try again.")
        else:
            messages.success(request, "Profile saved.")
    else:
        for errors in form.errors.values():
            messages.error(request, " ".join(map(str, errors)))
    return redirect("profile", user_id=request.user.pk)


LEADERBOARD_PAGE = 20


def leaderboard_page(request: HttpRequest) -> HttpResponse:
    """The leaderboard page: 20 people at a time ("Load more", `?start=`), and for a ranked
    logged-in reader their window. posts.leaderboard, which fails open to the database."""
    try:
        start = max(int(request.GET.get("start", 0)), 0)
    except ValueError:
        start = 0  # a mangled link: the top
    top = leaderboard.leaderboard_top(count=LEADERBOARD_PAGE, start=start)
    me, around = None, []
    if request.user.is_authenticated:
        me = leaderboard.leaderboard_entry(user_id=request.user.pk)
        around = leaderboard.leaderboard_around(user_id=request.user.pk) if me else []
    context = {
        "top": top,
        "next": start + LEADERBOARD_PAGE if len(top) == LEADERBOARD_PAGE else None,
        "me": me,
        "around": around,
    }
    return render_list(request, "posts/leaderboard.html", "posts/_leaderboard_rows.html", context)


@post_only("reports")
@login_required
def report_request(request: AuthenticatedHttpRequest) -> HttpResponse:
    """POST /reports/new: the reports page's (jobs.views.reports) "Build my activity report" button.

    Queues a report (posts.reports.report_enqueue); a refused quota shows as a message.
    Back to the reports page, which shows the progress.
    """
    try:
        reports.report_enqueue(owner=request.user)
    except QuotaExceeded as exc:
        messages.error(request, str(exc))
        return redirect("reports")
    messages.success(request, "Your report is being built; this page shows its progress.")
    return redirect("reports")
