"""The admin of posts and pages.

A post added in the admin is made by posts.services.post_create, like one made on the
site; edits and deletes go through the model, and posts.signals drops their caches.
"""

from django.contrib import admin

from posts.models import Page, Post
from posts.services import post_create


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    """Posts in the admin: counts are read-only (likes move with Like rows, views with the flush).

    A new post goes through post_create, so it is written through and fanned out.
    """

    list_display = ["title", "author", "created_at", "like_count", "view_count"]
    list_select_related = ["author"]
    search_fields = ["title", "author__username"]
    raw_id_fields = ["author"]
    readonly_fields = ["like_count", "view_count"]

    def save_model(self, request, obj, form, change):
        """Save an edit through the model; make a new post with post_create.

        The admin goes on with `obj` (its log entry, its redirect), so the new row's
        fields are copied onto it.
        """
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
    """Standing pages in the admin; the view count is read-only (posts.counters moves it).

    posts.signals drops a page's cached copy after each save or delete.
    """

    list_display = ["title", "slug", "view_count", "updated_at"]
    prepopulated_fields = {"slug": ["title"]}
    readonly_fields = ["view_count"]
