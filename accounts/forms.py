"""The site's sign-up and log-in forms; their bounds are the model's columns."""

from django import forms

from accounts.models import EMAIL_MAX_LENGTH, USERNAME_MAX_LENGTH
from accounts.validators import validate_username


class LoginForm(forms.Form):
    """Email and password: people log in by email only (accounts.backends.EmailBackend)."""

    email = forms.CharField(label="Email", max_length=254, widget=forms.EmailInput(attrs={"autofocus": True}))
    password = forms.CharField(label="Password", max_length=128, strip=False, widget=forms.PasswordInput)


class SignupForm(forms.Form):
    """Email, public handle and password; accounts.services.user_create checks the rest."""

    email = forms.EmailField(max_length=EMAIL_MAX_LENGTH)
    username = forms.CharField(
        max_length=USERNAME_MAX_LENGTH,
        validators=[validate_username],
        help_text="Your public handle: letters, digits and ./+/-/_ only.",
    )
    password = forms.CharField(max_length=128, strip=False, widget=forms.PasswordInput)
