"""The base of the site's forms: a text field with a length limit comes with a character counter.

templates/form_fields.html renders the counter ("12/200") beside the field, from the
field's own max_length, and the field's aria-describedby names it; static/js/counter.js
keeps it live while people type.
"""

from __future__ import annotations

from dataclasses import dataclass

from django import forms
from django.forms.boundfield import BoundField

# Fields people write in. Not an address (as long as it is) nor a password (masked).
COUNTED_WIDGETS = frozenset({"text", "textarea"})


@dataclass(frozen=True)
class CharacterCount:
    """A field's counter as first rendered: the characters of its value and its limit."""

    id: str
    used: int
    limit: int

    @property
    def over(self) -> bool:
        return self.used > self.limit


class CountedBoundField(BoundField):
    """A bound field that knows its character counter and is described by it."""

    @property
    def counter(self) -> CharacterCount | None:
        """The counter of a text field with a max_length; None for any other field.

        The value as submitted: a line break in a textarea arrives as "\\r\\n" and
        counts as two, as it does when the field checks its max_length.
        """
        limit = getattr(self.field, "max_length", None)
        if limit is None or self.widget_type not in COUNTED_WIDGETS or not self.auto_id:
            return None
        value = self.value()
        return CharacterCount(id=f"{self.auto_id}_counter", used=len(str(value or "")), limit=limit)

    @property
    def aria_describedby(self) -> str | None:
        described_by = super().aria_describedby
        counter = self.counter
        if described_by is None or counter is None:
            return described_by  # a widget's own aria-describedby stands, as Django's does
        return f"{described_by} {counter.id}".strip()


class SiteForm(forms.Form):
    """A form of the site's pages, rendered by templates/form_fields.html."""

    bound_field_class = CountedBoundField
