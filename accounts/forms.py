from django import forms

from accounts.models import User
from accounts.validators import validate_username


class LoginForm(forms.Form):
    email = forms.CharField(label="Email", max_length=254, widget=forms.EmailInput(attrs={"autofocus": True}))
    password = forms.CharField(label="Password", max_length=128, strip=False, widget=forms.PasswordInput)


class SignupForm(forms.Form):
    email = forms.EmailField(max_length=User._meta.get_field("email").max_length)
    username = forms.CharField(
        max_length=User._meta.get_field("username").max_length,
        validators=[validate_username],
        help_text="Your public handle: letters, digits and ./+/-/_ only.",
    )
    password = forms.CharField(max_length=128, strip=False, widget=forms.PasswordInput)
