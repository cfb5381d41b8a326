"""Template tags of Kestrel's pages: one relative-time style everywhere, and page links."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.template import Context
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString

register = template.Library()

# What Kestrel's pages hold as times: datetimes, the API's ISO 8601 text, or a stream's
# milliseconds since the epoch.
Moment = datetime | str | int | None


def _as_datetime(moment: Moment) -> datetime | None:
    if isinstance(moment, datetime):
        return moment
    if isinstance(moment, int):
        return datetime.fromtimestamp(moment / 1000, tz=UTC)
    return parse_datetime(moment) if moment else None


@register.filter
def ago(moment: Moment, now: datetime | None = None) -> str:
    """ "just now", "5 min", "3 h", "2 d", then the date: how long ago `moment` was."""
    when = _as_datetime(moment)
    if when is None:
        return ""
    seconds = ((now or timezone.now()) - when).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86_400:
        return f"{int(seconds // 3600)} h"
    if seconds < 30 * 86_400:
        return f"{int(seconds // 86_400)} d"
    return when.strftime("%-d %b %Y")


@register.simple_tag
def time_ago(moment: Moment) -> SafeString | str:
    """`<time>` with `ago`'s text, the full date and time on hover, and the machine-readable
    moment: how every page of Kestrel shows when something happened."""
    when = _as_datetime(moment)
    if when is None:
        return ""
    local = timezone.localtime(when)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', when.isoformat(), local.strftime("%-d %b %Y, %H:%M"), ago(when)
    )


@register.simple_tag(takes_context=True)
def query_with(context: Context, **changes: object) -> str:
    """This page's query string with `changes` applied (None removes a key): "?tab=everyone&before=…".

    For "Load older" links, which keep the page's other parameters (the home page's tab).
    """
    query = context["request"].GET.copy()
    for name, value in changes.items():
        if value is None:
            query.pop(name, None)
        else:
            query[name] = value
    return "?" + urlencode(sorted(query.lists()), doseq=True)
