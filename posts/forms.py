from django import forms

from accounts.models import User
from posts.models import Post


class PostForm(forms.Form):
    title = forms.CharField(max_length=Post._meta.get_field("title").max_length)
    content = forms.CharField(
        max_length=Post._meta.get_field("content").max_length, widget=forms.Textarea(attrs={"rows": 4})
    )


class ProfileForm(forms.Form):
    name = forms.CharField(max_length=User._meta.get_field("name").max_length, required=False)
    bio = forms.CharField(
        max_length=User._meta.get_field("bio").max_length, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
