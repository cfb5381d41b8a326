"""Template filters of Kestrel's pages: one relative-time style everywhere."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """ "just now", "5 min", "3 h", "2 d", then the date: how long ago `moment` was."""
    if moment is None:
        return ""
    seconds = ((now or timezone.now()) - moment).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86_400:
        return f"{int(seconds // 3600)} h"
    if seconds < 30 * 86_400:
        return f"{int(seconds // 86_400)} d"
    return moment.strftime("%-d %b %Y")
