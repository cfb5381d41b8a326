from django.urls import path

import core.converters  # noqa: F401 - registers the <id:...> converter
from feeds import apis, views

api_urlpatterns = [
    path("feed", apis.FeedApi.as_view(), name="api-feed"),
    path("users/<id:user_id>/activity", apis.UserActivityApi.as_view(), name="api-user-activity"),
    path("users/<id:user_id>/follow", apis.UserFollowApi.as_view(), name="api-user-follow"),
]

# The home timeline is on the home page (posts.views.home).
site_urlpatterns = [
    path("users/<id:user_id>/follow", views.follow_toggle, name="follow"),
]
