from django.contrib import admin

from posts.models import Post


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ["title", "author", "created_at"]
    list_select_related = ["author"]
    search_fields = ["title", "author__username"]
    raw_id_fields = ["author"]
