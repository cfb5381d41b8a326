"""The accounts app's tables: the user (log-in by email, a public handle, a token epoch) and follows.

Every door that writes a password or deactivates someone passes through User.save,
which ends the person's tokens and sessions in the same transaction
(accounts.services.user_tokens_revoke_all, imported there on purpose).
"""

from collections.abc import Iterator
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.db import models, transaction
from django.db.models.functions import Lower
from django.utils.crypto import salted_hmac

from accounts.validators import validate_username

# Column lengths, also the bounds of the forms and the API's serializers.
USERNAME_MAX_LENGTH = 150
EMAIL_MAX_LENGTH = 254
NAME_MAX_LENGTH = 100
BIO_MAX_LENGTH = 500


class User(AbstractUser):
    """Kestrel's user, from the first migration (Django cannot swap it in later).

    People log in with their email, and only with it; the username is their public
    handle, never an address (no "@"). Both are unique regardless of case, enforced
    by the database so that two concurrent sign-ups cannot both win.
    """

    # AbstractUser's field, with a validator that refuses "@": a handle must never pass
    # for someone's address.
    username = models.CharField(
        "username",
        max_length=USERNAME_MAX_LENGTH,
        unique=True,
        help_text="Required. 150 characters or fewer. Letters, digits and ./+/-/_ only.",
        validators=[validate_username],
        error_messages={"unique": "A user with that username already exists."},
    )
    email = models.EmailField("email address", max_length=EMAIL_MAX_LENGTH, unique=True)
    name = models.CharField("display name", max_length=NAME_MAX_LENGTH, blank=True)
    bio = models.TextField(max_length=BIO_MAX_LENGTH, blank=True)
    # Fencing number (core.locks) of the last profile edit. Internal, never shown.
    profile_fence = models.BigIntegerField(default=0, editable=False)
    # Tokens issued under an earlier epoch are refused, and sessions end (the session
    # hash mixes it in). The truth, which Redis mirrors (keys.user_token_epoch); only
    # ever written by an UPDATE ... SET token_epoch = token_epoch + 1.
    token_epoch = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("email"), name="accounts_user_email_ci_unique"),
            models.UniqueConstraint(Lower("username"), name="accounts_user_username_ci_unique"),
        ]

    # Set by set_password and set_unusable_password, consumed by the save that writes the
    # password: that save ends the person's tokens and sessions, so no door can forget to.
    # So does a save that writes is_active=False (QuerySet.update writes no epoch).
    _password_replaced = False
    _rehashing = False

    def set_password(self, raw_password: str | None) -> None:
        super().set_password(raw_password)
        if not self._rehashing:
            self._password_replaced = True

    def check_password(self, raw_password: str) -> bool:
        # A right password stored under an outdated hasher is re-hashed and saved from
        # here (set_password, then save): the same password, so nobody is logged out.
        self._rehashing = True
        try:
            return super().check_password(raw_password)
        finally:
            self._rehashing = False

    def set_unusable_password(self) -> None:
        super().set_unusable_password()
        self._password_replaced = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Save; one that writes a new password or is_active=False also bumps the token epoch
        in the same transaction (user_tokens_revoke_all). Saving an existing row never
        writes token_epoch: without update_fields it writes every other loaded column."""
        if kwargs.get("update_fields") is None and not self._state.adding:
            # A save of an instance loaded before a bump must not write its stale epoch
            # back: that would bring the tokens the bump ended back to life.
            deferred = self.get_deferred_fields()
            kwargs["update_fields"] = [
                f.name
                for f in self._meta.concrete_fields
                if not f.primary_key and f.name != "token_epoch" and f.attname not in deferred
            ]
        update_fields = kwargs.get("update_fields")
        writes_password = self._password_replaced and (update_fields is None or "password" in update_fields)
        deactivates = not self.is_active and (update_fields is None or "is_active" in update_fields)
        # A new account has no credentials to end.
        ends_credentials = (writes_password or deactivates) and not self._state.adding
        # One transaction: a password written without its epoch bump would leave the old
        # tokens working.
        with transaction.atomic(using=kwargs.get("using")):
            super().save(*args, **kwargs)
            if ends_credentials:
                from accounts.services import user_tokens_revoke_all  # services import this module

                user_tokens_revoke_all(user=self)
        if writes_password:
            self._password_replaced = False

    def get_session_auth_hash(self) -> str:
        """Django's session hash with the token epoch mixed in: a bump ends every session,
        as Django ends a session whose stored hash no longer matches (auth.get_user)."""
        return self._with_token_epoch(super().get_session_auth_hash())

    def get_session_auth_fallback_hash(self) -> Iterator[str]:
        """The hashes under SECRET_KEY_FALLBACKS, with the token epoch mixed in as above."""
        for password_hash in super().get_session_auth_fallback_hash():
            yield self._with_token_epoch(password_hash)

    def _with_token_epoch(self, password_hash: str) -> str:
        if not self.token_epoch:
            return password_hash  # never logged out everywhere: the hash Django always used
        return salted_hmac(
            "accounts.User.token_epoch", str(self.token_epoch), secret=password_hash, algorithm="sha256"
        ).hexdigest()


class Follow(models.Model):
    """`follower` follows `followee`: the follow graph's source of truth.

    Redis holds a mirror of it (accounts.keys.user_followers / user_following) for fast
    membership checks, counts and fan-out; the mirror is rebuilt from these rows.
    """

    # No single-column indexes: the composite ones below lead with each column.
    follower = models.ForeignKey(User, on_delete=models.CASCADE, related_name="following_links", db_index=False)
    followee = models.ForeignKey(User, on_delete=models.CASCADE, related_name="follower_links", db_index=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Two concurrent follows of the same person: one row, the other gets a 409.
            models.UniqueConstraint(fields=["follower", "followee"], name="accounts_follow_once"),
            models.CheckConstraint(condition=~models.Q(follower=models.F("followee")), name="accounts_follow_not_self"),
        ]
        indexes = [
            # Someone's followers, newest first (the list API pages by id), and the
            # follower ids a fan-out or a mirror rebuild reads.
            models.Index(fields=["followee", "id"], name="accounts_follow_followee"),
            # Whom someone follows, newest first (the unique constraint leads with
            # follower but orders by followee).
            models.Index(fields=["follower", "id"], name="accounts_follow_follower"),
        ]

    def __str__(self) -> str:
        return f"{self.follower_id} follows {self.followee_id}"
