from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models.functions import Lower


class User(AbstractUser):
    """Kestrel's user, from the first migration (Django cannot swap it in later).

    People log in with their email; the username is their public handle. Both are
    unique regardless of case, enforced by the database so that two concurrent
    sign-ups cannot both win.
    """

    email = models.EmailField("email address", unique=True)
    name = models.CharField("display name", max_length=100, blank=True)
    bio = models.TextField(max_length=500, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique"),
            models.UniqueConstraint(Lower("username"), name="accounts_user_username_ci_unique"),
        ]
