api_urlpatterns: list = []
site_urlpatterns: list = []
