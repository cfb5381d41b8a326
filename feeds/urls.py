from django.urls import path

import core.converters  # noqa: F401 - registers the <id:...> converter
from feeds import apis, views

# The home timeline and activity are served by posts (posts.urls): they show posts.
api_urlpatterns = [
    path("users/<id:user_id>/follow", apis.UserFollowApi.as_view(), name="api-user-follow"),
]

site_urlpatterns = [
    path("users/<id:user_id>/follow", views.follow_toggle, name="follow"),
    path("users/<id:user_id>/followers", views.followers, name="followers"),
    path("users/<id:user_id>/following", views.following, name="following"),
]
