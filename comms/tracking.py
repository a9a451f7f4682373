"""Open and click tracking for providers that do not track themselves (SMTP and the like).

Off by default (a campaign's ``tracking``). When on, the HTML part of each
campaign mail gets every ``http(s)`` link in an ``<a href>`` rewritten to
``/t/c/TOKEN`` and a 1x1 pixel ``/t/o/TOKEN``; each token is signed and names
the delivery (and, for a click, carries the original URL), so a redirect can
only lead to an address that was in the message. The unsubscribe link is left
alone. ``mailto:``, ``tel:``, fragments and relative links are never touched.
"""

from __future__ import annotations

import html as html_lib
import re
import uuid

from comms.links import sign_tracking

_HREF = re.compile(
    r"""(<a\b[^>]*?\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE | re.DOTALL
)
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


def click_url(base: str, delivery_id: uuid.UUID, url: str) -> str:
    return f"{base.rstrip('/')}/t/c/{sign_tracking(delivery_id, url)}"


def pixel_url(base: str, delivery_id: uuid.UUID) -> str:
    return f"{base.rstrip('/')}/t/o/{sign_tracking(delivery_id)}.gif"


def instrument_html(
    body: str, delivery_id: uuid.UUID, base: str, *, keep: frozenset[str] = frozenset()
) -> str:
    """``body`` with tracked links and an open pixel; links in ``keep`` stay as they are."""

    def rewrite(match: re.Match[str]) -> str:
        quoted = match.group(2) if match.group(2) is not None else match.group(3)
        url = html_lib.unescape(quoted).strip()
        if not re.match(r"^https?://", url, re.IGNORECASE) or url in keep:
            return match.group(0)
        tracked = html_lib.escape(click_url(base, delivery_id, url), quote=True)
        return f'{match.group(1)}"{tracked}"'

    tracked = _HREF.sub(rewrite, body)
    pixel = (
        f'<img src="{html_lib.escape(pixel_url(base, delivery_id))}" width="1" height="1" '
        'alt="" style="display:none;border:0">'
    )
    closing = re.search(r"</body\s*>", tracked, re.IGNORECASE)
    if closing:
        return tracked[: closing.start()] + pixel + tracked[closing.start() :]
    return tracked + pixel
