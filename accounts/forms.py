"""The site's sign-up and log-in forms; their bounds are the model's columns."""

from typing import Any

from django import forms
from django.contrib.auth import password_validation

from accounts.models import EMAIL_MAX_LENGTH, USERNAME_MAX_LENGTH
from accounts.services import user_signup_errors
from accounts.validators import validate_username
from core.forms import SiteForm


class LoginForm(SiteForm):
    """Email and password: people log in by email only (accounts.backends.EmailBackend)."""

    email = forms.CharField(label="Email", max_length=254, widget=forms.EmailInput(attrs={"autofocus": True}))
    password = forms.CharField(label="Password", max_length=128, strip=False, widget=forms.PasswordInput)


class SignupForm(SiteForm):
    """Email, public handle and password, every problem with them reported in one round.

    The password's rules, from AUTH_PASSWORD_VALIDATORS, are its help text: shown before
    the first attempt.
    """

    email = forms.EmailField(max_length=EMAIL_MAX_LENGTH)
    username = forms.CharField(
        max_length=USERNAME_MAX_LENGTH,
        validators=[validate_username],
        help_text="Your public handle: letters, digits and ./+/-/_ only.",
    )
    password = forms.CharField(max_length=128, strip=False, widget=forms.PasswordInput)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Read when the form is made, not imported: the validators as configured now.
        self.fields["password"].help_text = password_validation.password_validators_help_text_html()

    def clean(self) -> dict[str, Any]:
        """The sign-up's own checks (user_signup_errors) on every field that passed its field's.

        Django calls this even when a field was refused, so a malformed email does not
        hide a taken username or a weak password until the next attempt.
        """
        cleaned = super().clean() or {}
        errors = user_signup_errors(
            email=cleaned.get("email"), username=cleaned.get("username"), password=cleaned.get("password")
        )
        for field, messages in errors.items():
            for message in messages:
                self.add_error(field if field in self.fields else None, message)
        return cleaned
