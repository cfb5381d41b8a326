"""Email backends for tests: SMTP is the one thing that leaves the machine, so it is
the one thing replaced. They keep Django's locmem outbox behaviour."""

from __future__ import annotations

import smtplib

from django.core.mail.backends.locmem import EmailBackend as LocmemBackend

FAILURES = {"transient": 0}


class FlakyBackend(LocmemBackend):
    """Fails with a dropped connection while FAILURES["transient"] > 0, then delivers."""

    def send_messages(self, messages):
        if FAILURES["transient"] > 0:
            FAILURES["transient"] -= 1
            raise smtplib.SMTPServerDisconnected("connection dropped")
        return super().send_messages(messages)


class RefusingBackend(LocmemBackend):
    """The server refuses the recipient: retrying cannot help."""

    def send_messages(self, messages):
        raise smtplib.SMTPRecipientsRefused({messages[0].to[0]: (550, b"No such user")})
