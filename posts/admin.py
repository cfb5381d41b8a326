from django.contrib import admin

from core.commit import after_commit
from feeds.services import timeline_fanout_schedule
from posts.models import Page, Post
from posts.services import write_through_new_post


@admin.register(Post)
class PostAdmin(admin.ModelAdmin):
    list_display = ["title", "author", "created_at", "like_count", "view_count"]
    list_select_related = ["author"]
    search_fields = ["title", "author__username"]
    raw_id_fields = ["author"]
    readonly_fields = ["like_count", "view_count"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            # Edits and deletes are invalidated by posts.signals; a new post is written
            # through to its author's list and fanned out like one made on the site.
            after_commit(write_through_new_post, obj)
            timeline_fanout_schedule(post=obj)


@admin.register(Page)
class PageAdmin(admin.ModelAdmin):
    list_display = ["title", "slug", "view_count", "updated_at"]
    prepopulated_fields = {"slug": ["title"]}
    readonly_fields = ["view_count"]
