import pytest

from jobs.models import Job

pytestmark = pytest.mark.django_db


def test_the_reports_page_queues_a_report_and_shows_it(client, make_user, django_capture_on_commit_callbacks):
    client.force_login(make_user())

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/reports/new", follow=True)

    assert response.status_code == 200
    job = Job.objects.get(kind="report")
    assert f'data-job="{job.pk}"'.encode() in response.content
    assert b"Build my activity report" in response.content


def test_email_me_queues_an_email_to_myself(client, make_user):
    user = make_user()
    client.force_login(user)

    client.post("/reports/email-me")

    assert Job.objects.filter(kind="email", owner=user, payload__subject="Hello from Kestrel").exists()


def test_the_reports_page_needs_a_login(client):
    response = client.get("/reports")

    assert response.status_code == 302
    assert response["Location"].startswith("/login")
