"""URLs of the posts app: its API (under /api/) and its site pages.

config.urls mounts api_urlpatterns and site_urlpatterns; ids use core.converters'
<id:...> converter, so a malformed id is a 404.
"""

from django.urls import path

import core.converters  # noqa: F401 - registers the <id:...> converter
from posts import apis, views

api_urlpatterns = [
    path("posts", apis.PostsApi.as_view(), name="api-posts"),
    path("posts/<id:post_id>", apis.PostDetailApi.as_view(), name="api-post"),
    path("posts/<id:post_id>/like", apis.PostLikeApi.as_view(), name="api-post-like"),
    path("users/<id:user_id>/posts", apis.UserPostsApi.as_view(), name="api-user-posts"),
    path("users/<id:user_id>/stats", apis.UserStatsApi.as_view(), name="api-user-stats"),
    path("pages/<id:page_id>", apis.PageDetailApi.as_view(), name="api-page"),
    path("leaderboard", apis.LeaderboardApi.as_view(), name="api-leaderboard"),
    path("feed", apis.FeedApi.as_view(), name="api-feed"),
    path("users/<id:user_id>/activity", apis.UserActivityApi.as_view(), name="api-user-activity"),
    path("reports", apis.ReportCreateApi.as_view(), name="api-reports"),
]

site_urlpatterns = [
    path("", views.home, name="home"),
    path("posts/new", views.post_compose, name="post-compose"),
    path("posts/<id:post_id>", views.post_detail, name="post-detail"),
    path("posts/<id:post_id>/like", views.post_like_toggle, name="post-like"),
    path("posts/<id:post_id>/delete", views.post_delete, name="post-delete"),
    path("users/<id:user_id>", views.profile, name="profile"),
    path("users/<id:user_id>/activity", views.user_activity, name="user-activity"),
    path("profile/edit", views.profile_edit, name="profile-edit"),
    path("leaderboard", views.leaderboard_page, name="leaderboard"),
    path("reports/new", views.report_request, name="report-request"),
]
