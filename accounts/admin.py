"""The accounts admin: users, and the admin's log-in by email.

Saving a user here passes through User.save, so a password set or a deactivation
in the admin ends the person's tokens and sessions like any other door.
"""

from typing import Any, cast

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import HttpRequest

from accounts.models import EMAIL_MAX_LENGTH, User


class EmailAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's log-in, by email as everywhere else. The field keeps the name
    "username" the admin posts; accounts.backends.EmailBackend reads it as the email."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": "Please enter the correct email and password for a staff account.",
    }

    def __init__(self, request: HttpRequest | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(request, *args, **kwargs)
        # AuthenticationForm's username field is a CharField (its UsernameField).
        field = cast(forms.CharField, self.fields["username"])
        field.label = "Email"
        field.max_length = EMAIL_MAX_LENGTH
        field.widget.attrs.update(maxlength=str(field.max_length), autocomplete="email")


admin.site.login_form = EmailAdminAuthenticationForm
admin.site.site_header = admin.site.site_title = admin.site.index_title = "Kestrel administration"


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    """Django's user admin; adding a user asks for the email they will log in with."""

    list_display = ["username", "email", "is_staff", "date_joined"]
    # An account added without an email could never log in.
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("email", "username", "usable_password", "password1", "password2")}),
    )
