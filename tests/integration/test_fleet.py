"""The whole path through real worker processes: producer → broker → worker → SMTP sink."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms import client
from comms.db import unit_of_work
from comms.devsink import SinkHandler, SmtpSink
from comms.models import Delivery, DeliveryState, Message
from comms.provider_configs import create_provider_config
from comms.tenants import create_tenant
from tests.integration.conftest import Fleet, wait_until

pytestmark = pytest.mark.integration


def _tenant_with_sink(port: int) -> uuid.UUID:
    with unit_of_work() as session:
        tenant, _ = create_tenant(session, "acme")
        create_provider_config(
            session, kind="smtp", name="sink",
            settings={"host": "127.0.0.1", "port": port}, tenant_id=tenant.id,
        )  # fmt: skip
        return tenant.id


def _count(state: DeliveryState) -> int:
    with unit_of_work() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.state == state)
            )
            or 0
        )


def test_producer_command_is_delivered_once(fleet: Fleet, session: Session) -> None:
    handler = SinkHandler()
    with SmtpSink(handler) as sink:
        tenant_id = _tenant_with_sink(sink.port)
        fleet.worker("w1")
        recipients = [f"user{i}@example.org" for i in range(3)]
        key = client.send_email(
            tenant_id=tenant_id, sender="news@example.com", to=recipients,
            subject="Hello", text="Hi there",
        )  # fmt: skip
        # the producer retries: same key, same content
        client.send_email(
            tenant_id=tenant_id, sender="news@example.com", to=recipients,
            subject="Hello", text="Hi there", idempotency_key=key,
        )  # fmt: skip
        wait_until(lambda: _count(DeliveryState.SENT) == 3, 60, "3 sends", fleet.logs)
        assert sorted(handler.recipients()) == recipients
        with unit_of_work() as s:
            assert s.scalar(select(func.count()).select_from(Message)) == 1
            ids = s.scalars(select(Delivery.provider_message_id)).all()
        assert all(ids)
        received_ids = {m.message_id.strip("<>") for m in handler.received}
        assert received_ids == set(ids)


def test_worker_killed_mid_send_loses_nothing_and_sends_nothing_twice(fleet: Fleet) -> None:
    total = 300
    blocked = threading.Event()
    release = threading.Event()
    gate_after = 120

    def gate(address: str) -> str | None:
        # hold one send open in the middle of the run, so the kill lands mid-send
        if handler.count() >= gate_after and not blocked.is_set():
            blocked.set()
            release.wait(30)
        return None

    handler = SinkHandler(on_rcpt=gate)
    with SmtpSink(handler) as sink:
        tenant_id = _tenant_with_sink(sink.port)
        recipients = [f"reader{i:03d}@example.org" for i in range(total)]
        fleet.beat()
        first = fleet.worker("doomed")
        client.send_email(
            tenant_id=tenant_id, sender="news@example.com", to=recipients,
            subject="Newsletter", text="Hello",
        )  # fmt: skip
        wait_until(blocked.is_set, 90, "a send in progress mid-run", fleet.logs)
        Fleet.kill(first)
        release.set()
        assert _count(DeliveryState.SENDING) == 1  # the send the worker died in
        fleet.worker("successor")
        wait_until(lambda: _count(DeliveryState.SENT) == total, 120, "every send", fleet.logs)
        got = handler.recipients()
        assert len(got) == total, "a recipient received the newsletter twice"
        assert sorted(set(got)) == recipients
