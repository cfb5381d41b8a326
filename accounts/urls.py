"""The accounts app's URLs: site pages (site_urlpatterns) and API (api_urlpatterns), mounted by config.urls."""

from django.urls import path

import core.converters  # noqa: F401 - registers the <id:...> converter
from accounts import apis, views

site_urlpatterns = [
    path("signup", views.signup, name="signup"),
    path("login", views.login_view, name="login"),
    path("logout", views.logout_view, name="logout"),
]

api_urlpatterns = [
    path("register", apis.RegisterApi.as_view(), name="api-register"),
    path("login", apis.LoginApi.as_view(), name="api-login"),
    path("me", apis.MeApi.as_view(), name="api-me"),
    path("logout", apis.LogoutApi.as_view(), name="api-logout"),
    path("logout-all", apis.LogoutAllApi.as_view(), name="api-logout-all"),
    path("token", apis.TokenApi.as_view(), name="api-token"),
    path("token/refresh", apis.TokenRefreshApi.as_view(), name="api-token-refresh"),
    path("password", apis.PasswordChangeApi.as_view(), name="api-password"),
    path("users/<id:user_id>", apis.UserDetailApi.as_view(), name="api-user"),
    path("users/<id:user_id>/followers", apis.UserFollowersApi.as_view(), name="api-user-followers"),
    path("users/<id:user_id>/following", apis.UserFollowingApi.as_view(), name="api-user-following"),
]
