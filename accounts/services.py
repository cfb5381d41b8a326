"""Writes of the accounts app."""

from __future__ import annotations

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.models import User
from jobs.services import email_enqueue


def user_create(*, email: str, username: str, password: str, is_staff: bool = False) -> User:
    """Create a user; ValidationError (per field) on a taken email or username or a weak password.

    Uniqueness is checked first for a friendly message, and enforced by the
    database's case-insensitive constraints for the race where two sign-ups for the
    same address arrive together.
    """
    email = User.objects.normalize_email(email).strip().lower()
    username = username.strip()
    user = User(email=email, username=username, is_staff=is_staff)
    errors: dict[str, list[str]] = {}
    if User.objects.filter(email__iexact=email).exists():
        errors["email"] = ["A user with that email already exists."]
    if User.objects.filter(username__iexact=username).exists():
        errors["username"] = ["A user with that username already exists."]
    try:
        # Uniqueness was checked above with friendlier, case-insensitive messages.
        user.full_clean(exclude=["password"], validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        for field, messages in exc.message_dict.items():
            errors.setdefault(field, []).extend(messages)
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        errors["password"] = list(exc.messages)
    if errors:
        raise ValidationError(errors)

    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
            # Queued after commit: a sign-up that rolls back sends no welcome.
            email_enqueue(
                to=user.email,
                subject="Welcome to Kestrel",
                body=f"Hello {user.username}, welcome to Kestrel!",
                owner=user,
            )
    except IntegrityError:
        raise ValidationError({"email": ["A user with that email or username already exists."]}) from None
    return user


def user_update_profile(*, user: User, name: str | None = None, bio: str | None = None) -> User:
    """Change the public profile; ValidationError per field. The cache is dropped after commit."""
    fields = []
    if name is not None:
        user.name = name.strip()
        fields.append("name")
    if bio is not None:
        user.bio = bio.strip()
        fields.append("bio")
    if not fields:
        return user
    user.full_clean(exclude=[f.name for f in User._meta.fields if f.name not in fields])
    user.save(update_fields=fields)
    return user
