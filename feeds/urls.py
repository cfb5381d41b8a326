from django.urls import path

import core.converters  # noqa: F401 - registers the <id:...> converter
from feeds import apis

api_urlpatterns = [
    path("feed", apis.FeedApi.as_view(), name="api-feed"),
    path("users/<id:user_id>/activity", apis.UserActivityApi.as_view(), name="api-user-activity"),
]
# The home timeline is on the home page (accounts.views.home).
site_urlpatterns: list = []
