"""Merge fields in campaign templates: ``{{ field }}`` from the subscriber's data."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping

_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def render(template: str, values: Mapping[str, str], *, escape_html: bool = False) -> str:
    """Replace each ``{{ name }}`` with its value; unknown names become empty text."""

    def _sub(match: re.Match[str]) -> str:
        value = str(values.get(match.group(1), ""))
        return html.escape(value) if escape_html else value

    return _FIELD.sub(_sub, template)
