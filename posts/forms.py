"""Forms of the site's pages: composing a post, editing one's profile.

Limits come from the models, so a form refuses what the model would; each text field
shows its limit as a character counter (core.forms).
"""

from django import forms

from accounts.models import User
from core.forms import SiteForm
from posts.models import CONTENT_MAX_LENGTH, TITLE_MAX_LENGTH


class PostForm(SiteForm):
    """The home page's compose box (posts.views.post_compose).

    The model validates again in posts.services.post_create.
    """

    title = forms.CharField(label="Title", max_length=TITLE_MAX_LENGTH)
    content = forms.CharField(
        label="What's on your mind?", max_length=CONTENT_MAX_LENGTH, widget=forms.Textarea(attrs={"rows": 3})
    )


class ProfileForm(SiteForm):
    """The profile page's edit form (posts.views.profile_edit).

    accounts.services.user_update_profile validates again.
    """

    name = forms.CharField(max_length=User._meta.get_field("name").max_length, required=False)
    bio = forms.CharField(
        max_length=User._meta.get_field("bio").max_length, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
