from django import forms

from accounts.models import User
from posts.models import CONTENT_MAX_LENGTH, TITLE_MAX_LENGTH


class PostForm(forms.Form):
    title = forms.CharField(max_length=TITLE_MAX_LENGTH)
    content = forms.CharField(max_length=CONTENT_MAX_LENGTH, widget=forms.Textarea(attrs={"rows": 4}))


class ProfileForm(forms.Form):
    name = forms.CharField(max_length=User._meta.get_field("name").max_length, required=False)
    bio = forms.CharField(
        max_length=User._meta.get_field("bio").max_length, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
