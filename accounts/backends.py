from __future__ import annotations

from django.contrib.auth.backends import ModelBackend

from accounts.models import User


class EmailBackend(ModelBackend):
    """Log in with an email address, any case; never with a username.

    A username is a public handle anyone can choose, so matching it too would let a
    handle spelled as someone's address stand in for their email. The admin's log-in
    form posts the email as "username" (USERNAME_FIELD stays the handle), read here
    as the email it is.
    """

    def authenticate(self, request, username=None, password=None, email=None, **kwargs):
        address = email if email is not None else username
        if not address or password is None:
            return None
        user = User.objects.filter(email__iexact=address.strip()).first()
        if user is None:
            # Hash anyway so a missing account takes as long as a wrong password.
            User().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None
