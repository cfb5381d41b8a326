"""/ops/mail: the development mailbox, so "we emailed you a link" can be followed."""

from __future__ import annotations

import pytest
from django.core.mail import EmailMultiAlternatives, send_mail

pytestmark = pytest.mark.django_db

FILE_BACKEND = "django.core.mail.backends.filebased.EmailBackend"


@pytest.fixture
def mailbox(settings, tmp_path):
    settings.EMAIL_BACKEND = FILE_BACKEND
    settings.EMAIL_FILE_PATH = str(tmp_path / "mail")
    return tmp_path / "mail"


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user(is_staff=True))
    return client


def test_staff_read_what_was_sent_newest_first_with_its_text(mailbox, staff_client):
    send_mail("Welcome to Kestrel", "Hello ada, here is your link.", None, ["ada@example.com"])
    message = EmailMultiAlternatives("Your report is ready", "Download it here.", None, ["grace@example.com"])
    message.attach_alternative("<p>Download it <b>here</b>.</p>", "text/html")
    message.send()

    response = staff_client.get("/ops/mail")

    assert response.status_code == 200
    page = response.content.decode()
    assert page.index("Your report is ready") < page.index("Welcome to Kestrel")
    assert "Hello ada, here is your link." in page
    assert "Download it here." in page  # the plain part of a message with alternatives
    assert "grace@example.com" in page


def test_the_page_says_where_mail_goes_when_it_is_not_written_to_files(settings, staff_client):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"

    response = staff_client.get("/ops/mail")

    assert response.status_code == 200
    assert "django.core.mail.backends.smtp.EmailBackend" in response.content.decode()


def test_only_staff_read_the_mailbox(mailbox, client, make_user):
    send_mail("Secret link", "only for ada", None, ["ada@example.com"])

    assert client.get("/ops/mail").status_code == 302  # to log in
    client.force_login(make_user())
    assert b"only for ada" not in client.get("/ops/mail").content
