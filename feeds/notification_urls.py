from django.urls import path

from feeds import notification_apis, notification_views

api_urlpatterns = [
    path("notify", notification_apis.NotifyApi.as_view(), name="api-notify"),
    path("notifications", notification_apis.NotificationListApi.as_view(), name="api-notifications"),
    path("notifications/read", notification_apis.NotificationReadApi.as_view(), name="api-notifications-read"),
    path("notifications/stream", notification_apis.notification_stream, name="api-notifications-stream"),
]

site_urlpatterns = [
    path("notifications", notification_views.notifications, name="notifications"),
    path("notifications/read", notification_views.notifications_read_all, name="notifications-read"),
]
