from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm as DjangoAdminPasswordChangeForm

from accounts.models import User
from accounts.services import user_tokens_revoke_all


class AdminPasswordChangeForm(DjangoAdminPasswordChangeForm):
    """The admin's "change password" (say, for a compromised account) also logs the
    person out everywhere: their tokens, not only their sessions, stop working."""

    def save(self, commit: bool = True) -> User:
        user = super().save(commit=commit)
        if commit:
            user_tokens_revoke_all(user=user)
        return user


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "email", "is_staff", "date_joined"]
    change_password_form = AdminPasswordChangeForm
