"""/ops/mail (staff): the email Kestrel sent in development, read from EMAIL_FILE_PATH.

Django's file-based backend writes each batch of messages to a file there (the default
backend while DEBUG), so "we emailed you a link" can be followed without a mail server.
With any other backend the page says where mail goes instead.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

FILE_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
# Django's file-based backend ends every message with a line of 79 dashes.
SEPARATOR = b"\n" + b"-" * 79 + b"\n"
SHOWN = 50  # the newest messages listed


@dataclass(frozen=True)
class Mail:
    sent: datetime
    sender: str
    to: str
    subject: str
    body: str


def mail_list(folder: Path, *, limit: int = SHOWN) -> list[Mail]:
    """The newest `limit` messages in `folder`, newest first; an unreadable file is skipped."""
    if not folder.is_dir():
        return []
    messages: list[Mail] = []
    for path in sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True):
        sent = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
        try:
            chunks = [chunk for chunk in path.read_bytes().split(SEPARATOR) if chunk.strip()]
        except OSError:
            continue
        for chunk in reversed(chunks):
            message = email.message_from_bytes(chunk, policy=email.policy.default)  # an EmailMessage
            messages.append(_mail(message, sent))
            if len(messages) >= limit:
                return messages
    return messages


def _mail(message: EmailMessage, sent: datetime) -> Mail:
    part = message.get_body(preferencelist=("plain", "html"))
    body = part.get_content() if part is not None else ""
    return Mail(
        sent=sent,
        sender=str(message.get("From", "")),
        to=str(message.get("To", "")),
        subject=str(message.get("Subject", "")),
        body=body if isinstance(body, str) else "",
    )


@never_cache
@require_GET
@staff_member_required
def dev_mail(request: HttpRequest) -> HttpResponse:
    """The development mailbox, newest first."""
    file_backend = settings.EMAIL_BACKEND == FILE_BACKEND
    folder = Path(settings.EMAIL_FILE_PATH)
    context = {
        "file_backend": file_backend,
        "backend": settings.EMAIL_BACKEND,
        "folder": folder,
        "messages_sent": mail_list(folder) if file_backend else [],
        "shown": SHOWN,
    }
    return render(request, "ops/mail.html", context)
