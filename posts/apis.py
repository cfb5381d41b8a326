"""Posts, likes, profiles' posts and stats, pages with view counts, the leaderboard, reports,
and the streams that show posts: the home timeline (GET /api/feed) and activity (GET
/api/users/{id}/activity), feeds' pages hydrated with posts' details.

Views stay thin: validate, call one service or selector, return plain dicts.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import AllowAny, IsAuthenticated, IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.selectors import user_profile
from core.api import BodySerializer, QuerySerializer
from core.schema import api_error
from core.types import AuthenticatedRequest
from feeds.serializers import ActivityQuerySerializer, FeedQuerySerializer
from jobs.serializers import JobQueuedSerializer, quota_exceeded
from jobs.services import QuotaExceeded
from posts import counters, keys, leaderboard, reports, selectors, services
from posts.models import CONTENT_MAX_LENGTH, TITLE_MAX_LENGTH, Post


def _django_errors(exc: DjangoValidationError) -> serializers.ValidationError:
    if hasattr(exc, "error_dict"):
        return serializers.ValidationError(exc.message_dict)
    return serializers.ValidationError({"non_field_errors": exc.messages})


# The answers' shapes, for the schema only: the views return the selectors' plain dicts.


class PostAuthorSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()


class PostSerializer(serializers.Serializer):
    """posts.selectors.post_to_dict's shape, also the post of a home timeline entry (FeedApi)."""

    id = serializers.IntegerField()
    title = serializers.CharField()
    content = serializers.CharField()
    author = PostAuthorSerializer()
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()
    likeCount = serializers.IntegerField()
    viewCount = serializers.IntegerField(help_text="views flushed to the database")


VIEWS_HELP = (
    "every view so far, this one included, as this server knows them: other servers' views "
    "of the last fraction of a second show a moment later"
)


class PostViewedSerializer(PostSerializer):
    views = serializers.IntegerField(help_text=VIEWS_HELP)


class PostInputSerializer(BodySerializer):
    title = serializers.CharField(max_length=TITLE_MAX_LENGTH)
    content = serializers.CharField(max_length=CONTENT_MAX_LENGTH)


# Lists of posts page by stream id (`?before=<id>`, the `next` of the previous page) and
# take `?count=` from 1 to 100 (feeds.serializers).
_FeedPageSerializer = inline_serializer(
    "FeedPage",
    {
        "items": inline_serializer("FeedItem", {"id": serializers.CharField(), "post": PostSerializer()}, many=True),
        "next": serializers.CharField(allow_null=True, help_text="the `before` of the next page"),
    },
)


class PostsApi(APIView):
    """GET /api/posts: everyone's posts (posts.selectors.recent_posts_page); POST (logged
    in): publish one (posts.services.post_create).

    A new post is written through to its author's list and fanned out after commit;
    see the service for the failure policy.
    """

    permission_classes = [IsAuthenticatedOrReadOnly]

    @extend_schema(operation_id="posts_list", parameters=[FeedQuerySerializer], responses={200: _FeedPageSerializer})
    def get(self, request: Request) -> Response:
        """Everyone's posts, newest first.

        Page with `?before=` (the `next` of the previous page) and `?count=`.
        """
        query = FeedQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(selectors.recent_posts_page(**query.validated_data))

    @extend_schema(request=PostInputSerializer, responses={201: PostSerializer})
    def post(self, request: AuthenticatedRequest) -> Response:
        """Publish a post as the logged-in user.

        201 with the post; 400 with each field's errors.
        """
        data = PostInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            post = services.post_create(author=request.user, **data.validated_data)
        except DjangoValidationError as exc:
            raise _django_errors(exc) from None
        return Response(selectors.post_to_dict(post), status=status.HTTP_201_CREATED)


class PostDetailApi(APIView):
    """GET, PATCH, DELETE /api/posts/{id}: reads for anyone, writes for the author.

    A read is cache-aside (fails open to the database) and counts a view in this
    process's memory, so a state-role outage does not fail it.
    """

    permission_classes = [IsAuthenticatedOrReadOnly]

    @extend_schema(responses={200: PostViewedSerializer})
    def get(self, request: Request, post_id: int) -> Response:
        """A post, with `views`: every view so far, this one included.

        Each read counts as a view. 404 when there is no such post.
        """
        post = selectors.post_detail(post_id=post_id)
        if post is None:
            raise NotFound("Post not found")
        # Counted in this process's memory (no Redis call): a state-role outage does not
        # fail the read. The pending views are as this process last learned them.
        pending = counters.record_post_view(post_id=post_id, viewer=counters.viewer_id(request))
        return Response({**post, "views": post["viewCount"] + pending})

    @extend_schema(request=PostInputSerializer(partial=True), responses={200: PostSerializer})
    def patch(self, request: AuthenticatedRequest, post_id: int) -> Response:
        """Edit your post's title or content (either or both).

        200 with the post; 403 unless you wrote it; 400 with each field's errors.
        """
        post = get_object_or_404(Post.objects.select_related("author"), pk=post_id)
        data = PostInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        try:
            post = services.post_update(post=post, editor=request.user, **data.validated_data)
        except DjangoValidationError as exc:
            raise _django_errors(exc) from None
        return Response(selectors.post_to_dict(post))

    @extend_schema(responses={204: None})
    def delete(self, request: AuthenticatedRequest, post_id: int) -> Response:
        """Delete your post and its likes.

        204; 403 unless you wrote it.
        """
        post = get_object_or_404(Post, pk=post_id)
        services.post_delete(post=post, editor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PostLikeApi(APIView):
    """POST, DELETE /api/posts/{id}/like (logged in): posts.services.post_like / post_unlike.

    Cache and stream updates run after commit; see the services for their failure
    policy.
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={
            201: inline_serializer(
                "Liked", {"liked": serializers.BooleanField(), "postId": serializers.IntegerField()}
            ),
            400: api_error("You cannot like your own post"),
            409: api_error("You already like this post"),
        },
    )
    def post(self, request: AuthenticatedRequest, post_id: int) -> Response:
        """Like a post.

        201; 409 if you already like it; 400 for your own post.
        """
        post = get_object_or_404(Post, pk=post_id)
        try:
            services.post_like(post=post, user=request.user)
        except services.AlreadyLiked:
            return Response({"error": "You already like this post"}, status=status.HTTP_409_CONFLICT)
        except DjangoValidationError as exc:
            return Response({"error": exc.messages[0]}, status=status.HTTP_400_BAD_REQUEST)
        return Response({"liked": True, "postId": post_id}, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: AuthenticatedRequest, post_id: int) -> Response:
        """Take your like back.

        204; 404 if you did not like it.
        """
        post = get_object_or_404(Post, pk=post_id)
        try:
            services.post_unlike(post=post, user=request.user)
        except services.NotLiked:
            return Response({"error": "You do not like this post"}, status=status.HTTP_404_NOT_FOUND)
        return Response(status=status.HTTP_204_NO_CONTENT)


class UserPostsQuerySerializer(FeedQuerySerializer):
    count = serializers.IntegerField(
        min_value=1,
        max_value=100,
        default=keys.RECENT_POSTS_LIMIT,
        help_text=f"1 to 100, default {keys.RECENT_POSTS_LIMIT}",
    )


class UserPostsApi(APIView):
    """GET /api/users/{id}/posts: posts.selectors.user_posts_page.

    The first page is written through on the cache role (failing open to the
    database), older ones are a query; 404 for no such (active) account.
    """

    permission_classes = [AllowAny]

    @extend_schema(
        responses={
            200: inline_serializer(
                "UserPosts",
                {
                    "userId": serializers.IntegerField(),
                    "posts": inline_serializer(
                        "PostSummary",
                        {
                            "id": serializers.IntegerField(),
                            "title": serializers.CharField(),
                            "createdAt": serializers.DateTimeField(),
                        },
                        many=True,
                    ),
                    "next": serializers.CharField(allow_null=True, help_text="the `before` of the next page"),
                },
            )
        },
        parameters=[UserPostsQuerySerializer],
    )
    def get(self, request: Request, user_id: int) -> Response:
        """A person's posts, newest first: the 50 most recent, then older pages.

        Page with `?before=` (the `next` of the previous page) and `?count=`; 404 when
        there is no such person.
        """
        query = UserPostsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        if not selectors.user_exists(user_id=user_id):
            raise NotFound("User not found")
        return Response({"userId": user_id, **selectors.user_posts_page(user_id=user_id, **query.validated_data)})


class UserStatsApi(APIView):
    """GET /api/users/{id}/stats: posts.selectors.user_stats.

    Write-through on the cache role, failing open to the database; 404 for no such
    (active) account.
    """

    permission_classes = [AllowAny]

    @extend_schema(
        responses={
            200: inline_serializer(
                "UserStats",
                {
                    "userId": serializers.IntegerField(),
                    "postCount": serializers.IntegerField(),
                    "likesReceived": serializers.IntegerField(),
                },
            )
        }
    )
    def get(self, request: Request, user_id: int) -> Response:
        """A person's post count and the likes their posts received.

        404 when there is no such person.
        """
        if not selectors.user_exists(user_id=user_id):
            raise NotFound("User not found")
        return Response({"userId": user_id, **selectors.user_stats(user_id=user_id)})


class PageDetailApi(APIView):
    """GET /api/pages/{id}: a standing page, cache-aside, counting a view in memory.

    The page fails open to the database; the view is sent later by the view buffer.
    """

    permission_classes = [AllowAny]

    @extend_schema(
        responses={
            200: inline_serializer(
                "Page",
                {
                    "id": serializers.IntegerField(),
                    "slug": serializers.CharField(),
                    "title": serializers.CharField(),
                    "body": serializers.CharField(allow_blank=True),
                    "viewCount": serializers.IntegerField(help_text="views flushed to the database"),
                    "views": serializers.IntegerField(help_text=VIEWS_HELP),
                },
            )
        }
    )
    def get(self, request: Request, page_id: int) -> Response:
        """A standing page (about, guidelines), with `views`: every read is a view.

        404 when there is no such page.
        """
        page = selectors.page_detail(page_id=page_id)
        if page is None:
            raise NotFound("Page not found")
        pending = counters.record_page_view(page_id=page_id, viewer=counters.viewer_id(request))
        return Response({**page, "views": page["viewCount"] + pending})


class LeaderboardQuerySerializer(QuerySerializer):
    count = serializers.IntegerField(min_value=1, max_value=100, default=10, help_text="1 to 100, default 10")
    start = serializers.IntegerField(
        min_value=0, max_value=10**9, default=0, help_text="how many ranks to skip: the `next` of the previous page"
    )


class LeaderboardEntrySerializer(serializers.Serializer):
    rank = serializers.IntegerField(min_value=1)
    userId = serializers.IntegerField()
    username = serializers.CharField(allow_null=True, help_text="null for an account deleted since")
    likes = serializers.IntegerField()


class LeaderboardSerializer(serializers.Serializer):
    top = LeaderboardEntrySerializer(many=True)
    next = serializers.IntegerField(allow_null=True, help_text="the `start` of the next page")
    me = LeaderboardEntrySerializer(allow_null=True, help_text="the caller's entry; null when anonymous or unranked")
    aroundMe = LeaderboardEntrySerializer(many=True, required=False, help_text="only for a logged-in caller")


class LeaderboardApi(APIView):
    """GET /api/leaderboard: posts.leaderboard's top, and the caller's rank and window.

    The leaderboard fails open to the database.
    """

    permission_classes = [AllowAny]

    @extend_schema(parameters=[LeaderboardQuerySerializer], responses={200: LeaderboardSerializer})
    def get(self, request: Request) -> Response:
        """People ranked by the likes their posts received: `count` of them from rank `start` + 1.

        For a logged-in caller also their own entry (`me`, null until ranked) and the
        entries around it (`aroundMe`).
        """
        query = LeaderboardQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        count, start = query.validated_data["count"], query.validated_data["start"]
        top = leaderboard.leaderboard_top(count=count, start=start)
        body: dict = {"top": top, "next": start + count if len(top) == count else None, "me": None}
        if request.user.is_authenticated:
            body["me"] = leaderboard.leaderboard_entry(user_id=request.user.pk)
            body["aroundMe"] = leaderboard.leaderboard_around(user_id=request.user.pk) if body["me"] else []
        return Response(body)


# --- Feeds' streams, with their posts -----------------------------------------------------------
#
# Both page as GET /api/posts does.

_ActivityPageSerializer = inline_serializer(
    "ActivityPage",
    {
        "userId": serializers.IntegerField(),
        "items": inline_serializer(
            "ActivityItem",
            {
                "id": serializers.CharField(),
                "action": serializers.CharField(help_text="posted, liked or followed"),
                "targetId": serializers.IntegerField(help_text="a post, or a person for `followed`"),
                "timestamp": serializers.IntegerField(help_text="milliseconds since the epoch"),
            },
            many=True,
        ),
        "next": serializers.CharField(allow_null=True, help_text="the `before` of the next page"),
    },
)


class FeedApi(APIView):
    """GET /api/feed (logged in): posts.selectors.home_timeline_page.

    The timeline is state-role data rebuilt from the database when missing or when
    Redis does not answer (feeds.selectors.timeline_page).
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[FeedQuerySerializer], responses={200: _FeedPageSerializer})
    def get(self, request: AuthenticatedRequest) -> Response:
        """Posts by the people you follow, newest first.

        Page with `?before=` (the `next` of the previous page) and `?count=`.
        """
        query = FeedQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(selectors.home_timeline_page(user_id=request.user.pk, **query.validated_data))


class UserActivityApi(APIView):
    """GET /api/users/{id}/activity: posts.selectors.user_activity_page.

    The stream is the only copy of what it records: a state role that does not answer
    is a 503. 404 for no such (active) account.
    """

    permission_classes = [AllowAny]

    @extend_schema(parameters=[ActivityQuerySerializer], responses={200: _ActivityPageSerializer})
    def get(self, request: Request, user_id: int) -> Response:
        """What someone did (posted, liked, followed), newest first.

        Page with `?before=` (the `next` of the previous page) and `?count=`; 404 when
        there is no such person.
        """
        query = ActivityQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        if user_profile(user_id=user_id) is None:
            raise NotFound("User not found")
        return Response({"userId": user_id, **selectors.user_activity_page(user_id=user_id, **query.validated_data)})


# --- Reports ---------------------------------------------------------------------------------------


class ReportCreateApi(APIView):
    """POST /api/reports (logged in): queue the caller's activity report (posts.reports).

    GET /api/jobs/{id} follows it; 429 when the quota (jobs.queues.QUOTAS) refuses.
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None,
        responses={202: JobQueuedSerializer, 429: api_error("A report is already being built; ...")},
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        """Build your activity report (a CSV of your posts with their views and likes).

        202 with the job to follow at `status`; 429 while one is being built or after
        too many.
        """
        try:
            job = reports.report_enqueue(owner=request.user)
        except QuotaExceeded as exc:
            return quota_exceeded(exc)
        return Response(
            {"jobId": str(job.pk), "message": "Report queued", "status": f"/api/jobs/{job.pk}"},
            status=status.HTTP_202_ACCEPTED,
        )
