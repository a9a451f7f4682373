"""The listener as a real process: a message answered 250 survives a kill and is threaded once."""

from __future__ import annotations

import smtplib
import socket
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms.devstack import StackInfo, free_port
from comms.inbound.replies import set_reply_domain
from comms.inbound.store import Envelope, LocalStore
from comms.links import reply_address
from comms.models import Event, InboundReply
from tests.factories import DeliveryFactory, TenantFactory
from tests.integration.conftest import Fleet, wait_until

pytestmark = pytest.mark.integration
DOMAIN = "news.acme.example"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _reply(to: str, n: int) -> bytes:
    return (
        f"From: Ann <ann@example.org>\r\nTo: {to}\r\nSubject: Re: News\r\n"
        f"Message-ID: <reply-{n}@example.org>\r\n\r\nReply number {n}.\r\n"
    ).encode()


def test_a_message_answered_250_is_processed_once_across_a_listener_kill(
    fleet: Fleet,
    stack: StackInfo,
    session: Session,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = TenantFactory()
    delivery = DeliveryFactory(message__tenant_id=tenant.id)
    session.commit()
    set_reply_domain(session, tenant.id, DOMAIN)
    session.commit()
    port = free_port()
    store_dir = tmp_path / "inbound-store"
    monkeypatch.setenv("COMMS_INBOUND_PORT", str(port))
    monkeypatch.setenv("COMMS_INBOUND_STORE", str(store_dir))
    to = reply_address(delivery.id, DOMAIN)

    listener = fleet.start("inbound", "serve", name="listener")
    wait_until(lambda: _listening(port), 30, "the listener", fleet.logs)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.sendmail("ann@example.org", [to], _reply(to, 1)) == {}
    fleet.kill(listener)  # right after the 250: no shutdown handler runs

    # a message stored by a listener that died before it could publish the task
    LocalStore(store_dir).put(_reply(to, 2), Envelope(recipients=[to], mail_from="a@b.example"))

    fleet.start("inbound", "serve", name="listener-again")  # reconciles on start
    wait_until(lambda: _listening(port), 30, "the restarted listener", fleet.logs)
    fleet.worker("inbound-worker", queues="inbound")

    def threaded() -> int:
        session.expire_all()
        return int(session.scalar(select(func.count()).select_from(InboundReply)) or 0)

    queue = redis.Redis.from_url(stack.redis_url)
    wait_until(
        lambda: threaded() == 2 and queue.llen("inbound") == 0, 60, "two threaded replies",
        fleet.logs,
    )  # fmt: skip
    queue.close()
    assert threaded() == 2  # the first message was published twice (before the kill and
    # by the reconciliation) and still threaded once
    texts = sorted(session.scalars(select(InboundReply.text)))
    assert texts == ["Reply number 1.", "Reply number 2."]
    replied = session.scalar(
        select(func.count()).where(Event.delivery_id == delivery.id, Event.type == "replied")
    )
    assert replied == 2
    assert all(isinstance(r, uuid.UUID) for r in session.scalars(select(InboundReply.id)))
