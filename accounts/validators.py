"""Validators of the accounts app."""

from __future__ import annotations

from django.core import validators
from django.utils.deconstruct import deconstructible


@deconstructible
class UsernameValidator(validators.RegexValidator):
    """A username is a public handle: letters, digits and . + - _ only.

    Django's own validator also allows "@". Kestrel's usernames must never look like
    an email address, since people log in by email and a handle spelled as someone
    else's address would be taken for theirs wherever the two are shown side by side.
    """

    regex = r"^[\w.+-]+\Z"
    message = "Enter a valid username: letters, digits and ./+/-/_ only (no @)."
    flags = 0


validate_username = UsernameValidator()
