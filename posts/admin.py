from django.contrib import admin

from posts.models import Page, Post
from posts.services import post_create


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ["title", "author", "created_at", "like_count", "view_count"]
    list_select_related = ["author"]
    search_fields = ["title", "author__username"]
    raw_id_fields = ["author"]
    readonly_fields = ["like_count", "view_count"]

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)  # posts.signals drops what the edit changed
            return
        # A new post is made the one way posts are made: written through to its author's
        # list and fanned out like one made on the site.
        post = post_create(author=obj.author, title=obj.title, content=obj.content)
        # The admin goes on with `obj` (its log entry, its redirect): make it the new row.
        for field in Post._meta.concrete_fields:
            setattr(obj, field.attname, getattr(post, field.attname))
        obj._state.adding, obj._state.db = False, post._state.db


@admin.register(Page)
class PageAdmin(admin.ModelAdmin):
    list_display = ["title", "slug", "view_count", "updated_at"]
    prepopulated_fields = {"slug": ["title"]}
    readonly_fields = ["view_count"]
