"""People on the live site, and a ready-made corner of it for the page-by-page checks."""

from __future__ import annotations

import json
from dataclasses import dataclass

from playwright.sync_api import Page, expect

from tests.live import LiveKestrel

PASSWORD = "Kestrel-e2e-pass-42"


@dataclass(frozen=True)
class Person:
    username: str
    id: int = 0
    password: str = PASSWORD

    @property
    def email(self) -> str:
        return f"{self.username}@example.com"


def log_in(page: Page, person: Person, *, next_path: str = "") -> None:
    """Through the site's own form, as a person would."""
    page.goto("/login" + (f"?next={next_path}" if next_path else ""))
    page.get_by_label("Email").fill(person.email)
    page.get_by_label("Password").fill(person.password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


# Kestrel's own services, so passwords are hashed and every after-commit side effect
# (write-through lists, timelines, the leaderboard, notifications) happens as in use.
SEED = """
import json, os
from accounts.services import user_create
from feeds.services import follow_create
from posts.reports import report_enqueue
from posts.services import post_create, post_like
from ops.jobs import sample_ops

password = os.environ["SEED_PASSWORD"]
writer = user_create(email="wren@example.com", username="wren", password=password)
reader = user_create(email="robin@example.com", username="robin", password=password)
staff = user_create(email="merlin@example.com", username="merlin", password=password, is_staff=True)
follow_create(follower=reader, followee=writer)
post = post_create(author=writer, title="Hovering over the meadow", content="Kestrels hover, facing the wind.")
post_like(post=post, user=reader)
report_enqueue(owner=writer)
# Two samples, as the cron job takes them a minute apart: enough for a line on each chart.
sample_ops()
sample_ops()
print(json.dumps({"writer": writer.pk, "reader": reader.pk, "staff": staff.pk, "post": post.pk}))
"""


@dataclass(frozen=True)
class Corner:
    """Who and what the seed made: a writer whose post the reader follows and liked, and a staff member."""

    writer: Person
    reader: Person
    staff: Person
    post_id: int


def seed(site: LiveKestrel) -> Corner:
    output = site.shell(SEED, env={"SEED_PASSWORD": PASSWORD})
    ids = json.loads(output.strip().splitlines()[-1])
    return Corner(
        writer=Person("wren", ids["writer"]),
        reader=Person("robin", ids["reader"]),
        staff=Person("merlin", ids["staff"]),
        post_id=ids["post"],
    )
