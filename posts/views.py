"""Site pages of the posts app: the home page, posts, profiles, the leaderboard, reports.

Thin: each reads the same cached selectors as the API or calls one service, then
renders a template or redirects with a message. Pages that change something are POST
only (a GET is sent to the page with the button: core.views.post_only) and behind
@login_required (their request is an AuthenticatedHttpRequest).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from accounts.selectors import follow_counts, follow_exists, user_profile
from accounts.services import ProfileBeingUpdated, user_update_profile
from core.types import AuthenticatedHttpRequest
from core.views import post_only
from feeds.selectors import FEED_COUNT_DEFAULT
from feeds.stream_ids import stream_id_or_raise
from jobs.services import QuotaExceeded
from posts import counters, leaderboard, reports, selectors, services
from posts.forms import PostForm, ProfileForm
from posts.models import Post


def home(request: HttpRequest) -> HttpResponse:
    """The home page: the home timeline (posts by the people you follow) above everyone's recent posts.

    The timeline only for a logged-in reader, paged by `?before=<stream id>`; a
    malformed cursor shows the newest page.
    """
    return _home(request, compose=PostForm() if request.user.is_authenticated else None)


def _home(request: HttpRequest, *, compose: PostForm | None, status: int = 200) -> HttpResponse:
    timeline = None
    if request.user.is_authenticated:
        timeline = selectors.home_timeline_page(
            user_id=request.user.pk, count=FEED_COUNT_DEFAULT, before=_cursor(request.GET.get("before"))
        )
    context = {"posts": selectors.post_list_recent(limit=20), "timeline": timeline, "compose": compose}
    return render(request, "home.html", context, status=status)


def _cursor(value: str | None) -> str | None:
    try:
        ms, seq = stream_id_or_raise(value or "")
    except ValueError:
        return None  # none, or a mangled link: the newest page
    return f"{ms}-{seq}"


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
        "liked": request.user.is_authenticated and selectors.post_liked_by(post_id=post_id, user_id=request.user.pk),
    }
    return render(request, "posts/post_detail.html", context)


@post_only("post-detail")
@login_required
def post_like_toggle(request: AuthenticatedHttpRequest, post_id: int) -> HttpResponse:
    """POST /posts/<id>/like: like the post, or take the like back with action=unlike.

    A double click is harmless (the state asked for is the state it is in); liking
    one's own post shows an error. Back to the post's page.
    """
    post = get_object_or_404(Post, pk=post_id)
    try:
        if request.POST.get("action") == "unlike":
            services.post_unlike(post=post, user=request.user)
        else:
            services.post_like(post=post, user=request.user)
    except (services.AlreadyLiked, services.NotLiked):
        pass  # a double click: the state the person wanted is the state it is in
    except ValidationError as exc:
        messages.error(request, exc.messages[0])
    return redirect("post-detail", post_id=post_id)


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
    """A person's page: profile, follow counts, recent posts and stats, leaderboard rank.

    The owner gets the edit form; another logged-in reader, the follow button. Every
    part comes from a cache that fails open. 404 for no such (active) account.
    """
    person = user_profile(user_id=user_id)
    if person is None:
        raise Http404("No such person")
    is_owner = request.user.is_authenticated and request.user.pk == user_id
    form = ProfileForm(initial={"name": person["name"], "bio": person["bio"]}) if is_owner else None
    follower = request.user if request.user.is_authenticated and not is_owner else None
    posts, stats = selectors.user_posts_and_stats(user_id=user_id)
    context = {
        "person": person,
        "follows": follow_counts(user_id=user_id),
        "can_follow": follower is not None,
        "is_following": follower is not None and follow_exists(follower_id=follower.pk, followee_id=user_id),
        "posts": posts,
        "stats": stats,
        "rank": leaderboard.leaderboard_entry(user_id=user_id),
        "form": form,
        "is_owner": is_owner,
    }
    return render(request, "posts/profile.html", context)


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


def leaderboard_page(request: HttpRequest) -> HttpResponse:
    """The leaderboard page: the top 20, and for a ranked logged-in reader their window.

    posts.leaderboard, which fails open to the database.
    """
    me, around = None, []
    if request.user.is_authenticated:
        me = leaderboard.leaderboard_entry(user_id=request.user.pk)
        around = leaderboard.leaderboard_around(user_id=request.user.pk) if me else []
    context = {"top": leaderboard.leaderboard_top(count=20), "me": me, "around": around}
    return render(request, "posts/leaderboard.html", context)


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
