"""Open and click tracking for SMTP campaigns: instrumented HTML, pixel, signed redirects."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from comms.api import create_app
from comms.links import sign_tracking
from comms.models import Event
from tests.campaign_mail import send_campaign_mail
from tests.factories import SubscriberFactory, TenantFactory

HTML = (
    '<html><body><p>Hi {{ first_name }}, read <a href="https://acme.example/post?a=1&amp;b=2">'
    "the post</a> or <a href='mailto:hi@acme.example'>write</a>.</p>"
    '<p><a href="{{ unsubscribe_url }}">stop</a></p></body></html>'
)


@pytest.fixture
def client(session: Session) -> Iterator[TestClient]:
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


def _send(session: Session, *, tracking: bool) -> tuple[uuid.UUID, str]:
    tenant = TenantFactory()
    SubscriberFactory(tenant_id=tenant.id, email="ann@example.org")
    _, delivery_id, mail = send_campaign_mail(
        session, tenant.id, sender="news@acme.example", html=HTML, tracking=tracking
    )
    body = mail.get_body(("html",))
    assert body is not None
    return delivery_id, str(body.get_content())


def test_without_tracking_the_html_is_left_alone(session: Session) -> None:
    _, html = _send(session, tracking=False)
    assert 'href="https://acme.example/post?a=1&amp;b=2"' in html and "/t/o/" not in html


def test_tracked_links_redirect_and_record_clicks_and_opens(
    session: Session, client: TestClient, stack: object
) -> None:
    delivery_id, html = _send(session, tracking=True)
    links = re.findall(r'href="([^"]+)"', html)
    tracked = [link for link in links if "/t/c/" in link]
    assert len(tracked) == 1  # the article; mailto and unsubscribe untouched
    assert any(link.startswith("mailto:") for link in re.findall(r"href='([^']+)'", html))
    assert any("/u/" in link for link in links)
    (pixel,) = re.findall(r'<img src="([^"]+)"', html)

    path = tracked[0].removeprefix("http://127.0.0.1:8025")
    answer = client.get(path, follow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["location"] == "https://acme.example/post?a=1&b=2"
    opened = client.get(
        pixel.removeprefix("http://127.0.0.1:8025"),
        headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0) Thunderbird/128"},
    )
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
    assert client.get(pixel.removeprefix("http://127.0.0.1:8025")).status_code == 200  # reload

    session.expire_all()
    events = session.scalars(select(Event).where(Event.delivery_id == delivery_id)).all()
    kinds = [e.type for e in events]
    assert kinds.count("clicked") == 1 and kinds.count("opened") == 1  # the reload counts once
    # engagement reaches the send-time model through the events queue
    queue = redis.Redis.from_url(stack.redis_url)  # type: ignore[attr-defined]
    assert queue.llen("events") == 2
    queue.close()


def test_forged_or_foreign_redirects_are_refused(session: Session, client: TestClient) -> None:
    delivery_id, html = _send(session, tracking=True)
    (tracked,) = [link for link in re.findall(r'href="([^"]+)"', html) if "/t/c/" in link]
    token = tracked.rsplit("/", 1)[1]
    body, mac = token.split(".")
    assert client.get(f"/t/c/{body}.{mac[::-1]}", follow_redirects=False).status_code == 404
    # a URL that was never in the message cannot be signed by anyone but us
    forged = sign_tracking(delivery_id, "https://evil.example/")
    evil_body = forged.split(".")[0]
    assert client.get(f"/t/c/{evil_body}.{mac}", follow_redirects=False).status_code == 404
    assert (
        client.get(f"/t/c/{sign_tracking(delivery_id)}", follow_redirects=False).status_code == 404
    )
    assert client.get("/t/o/garbage.gif").status_code == 404
