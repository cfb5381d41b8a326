from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts.urls import api_urlpatterns as accounts_api
from accounts.urls import site_urlpatterns as accounts_site
from core.api import api_not_found
from core.views import favicon
from feeds.notification_urls import api_urlpatterns as notifications_api
from feeds.notification_urls import site_urlpatterns as notifications_site
from feeds.urls import api_urlpatterns as feeds_api
from feeds.urls import site_urlpatterns as feeds_site
from jobs.urls import api_urlpatterns as jobs_api
from jobs.urls import site_urlpatterns as jobs_site
from posts.urls import api_urlpatterns as posts_api
from posts.urls import site_urlpatterns as posts_site

# Django tries patterns in order, one regular expression each, and no two of these
# overlap: the most requested (a post, the feed) go first.
api_urlpatterns = [
    *posts_api,
    *feeds_api,
    *accounts_api,
    *notifications_api,
    *jobs_api,
    path("schema", SpectacularAPIView.as_view(), name="api-schema"),
    # Split: Swagger UI's start-up script is a file (docs?script), not an inline <script>,
    # so the Content-Security-Policy needs no 'unsafe-inline'.
    path("docs", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # Last: any other /api/ path is the API's JSON 404, also with DEBUG on.
    re_path(r"^(?P<rest>.*)\Z", api_not_found, name="api-not-found"),
]

api_route = path("api/", include(api_urlpatterns))

urlpatterns = [
    # First: the API is most of the traffic, and Django tries patterns in order (each
    # site include below has an empty prefix, so every one of its patterns is tried).
    api_route,
    path("", include(posts_site)),  # the home page first
    path("", include(accounts_site)),
    path("", include(jobs_site)),
    path("", include(feeds_site)),
    path("", include(notifications_site)),
    path("", include("ops.urls")),
    path("favicon.ico", favicon, name="favicon"),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
]

handler400 = "core.api.json_handler400"
handler403 = "core.views.json_handler403"
handler404 = "core.api.json_handler404"
handler500 = "core.api.json_handler500"
