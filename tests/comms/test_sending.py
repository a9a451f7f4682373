"""The deliver function against a real loopback SMTP server (no worker needed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from comms.commands import EmailContent
from comms.db import unit_of_work
from comms.devsink import SinkHandler, SmtpSink
from comms.messaging import accept
from comms.models import Delivery, DeliveryState, Event, SuppressionReason
from comms.provider_configs import create_provider_config
from comms.providers.smtp import close_all_connections
from comms.sending import Outcome, deliver
from comms.tenants import create_tenant
from tests.factories import SuppressionEntryFactory


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(SinkHandler()) as s:
        yield s
        close_all_connections()  # our side first, so the server closes cleanly


def _setup(session: Session, port: int, to: list[str]) -> list[uuid.UUID]:
    tenant, _ = create_tenant(session, "acme")
    create_provider_config(
        session, kind="smtp", name="sink", settings={"host": "127.0.0.1", "port": port},
        tenant_id=tenant.id,
    )  # fmt: skip
    content = EmailContent.model_validate(
        {"from": "news@example.com", "to": to, "subject": "Hi", "text": "Hello"}
    )
    accepted = accept(session, tenant.id, content)
    session.commit()
    return accepted.delivery_ids


def _delivery(delivery_id: uuid.UUID) -> Delivery:
    with unit_of_work() as session:
        return session.get_one(Delivery, delivery_id)


def test_sends_and_records_the_provider_message_id(session: Session, sink: SmtpSink) -> None:
    (delivery_id,) = _setup(session, sink.port, ["ann@example.org"])
    result = deliver(delivery_id)
    assert result.outcome is Outcome.SENT
    row = _delivery(delivery_id)
    assert row.state is DeliveryState.SENT
    assert row.attempts == 1
    assert sink.handler.received[0].message_id == f"<{row.provider_message_id}>"
    assert sink.handler.received[0].recipients == ("ann@example.org",)


def test_a_second_deliver_of_the_same_delivery_sends_nothing(
    session: Session, sink: SmtpSink
) -> None:
    (delivery_id,) = _setup(session, sink.port, ["ann@example.org"])
    assert deliver(delivery_id).outcome is Outcome.SENT
    assert deliver(delivery_id).outcome is Outcome.SKIPPED
    assert sink.handler.count() == 1


def test_permanent_refusal_fails_with_the_reason(session: Session, sink: SmtpSink) -> None:
    sink.handler.on_rcpt = lambda address: "550 5.1.1 no such user"
    (delivery_id,) = _setup(session, sink.port, ["ghost@example.org"])
    result = deliver(delivery_id)
    assert result.outcome is Outcome.FAILED
    row = _delivery(delivery_id)
    assert row.state is DeliveryState.FAILED
    assert row.last_error is not None and "550" in row.last_error
    with unit_of_work() as s:
        assert s.scalars(select(Event.type).where(Event.delivery_id == delivery_id)).all() == [
            "failed"
        ]


def test_transient_refusal_is_retried_then_sent(session: Session, sink: SmtpSink) -> None:
    answers = iter(["451 4.3.0 try again later"])
    sink.handler.on_rcpt = lambda address: next(answers, None)
    (delivery_id,) = _setup(session, sink.port, ["ann@example.org"])
    first = deliver(delivery_id)
    assert first.outcome is Outcome.RETRY
    assert first.retry_in is not None and first.retry_in > 0
    assert _delivery(delivery_id).state is DeliveryState.PENDING
    assert deliver(delivery_id).outcome is Outcome.SENT
    assert _delivery(delivery_id).attempts == 2


def test_gives_up_after_max_attempts(
    session: Session, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    from comms.settings import reset_settings

    monkeypatch.setenv("COMMS_MAX_SEND_ATTEMPTS", "2")
    reset_settings()
    sink.handler.on_rcpt = lambda address: "421 4.7.0 busy"
    (delivery_id,) = _setup(session, sink.port, ["ann@example.org"])
    assert deliver(delivery_id).outcome is Outcome.RETRY
    result = deliver(delivery_id)
    reset_settings()
    assert result.outcome is Outcome.FAILED
    assert "gave up after 2 attempts" in (_delivery(delivery_id).last_error or "")


def test_dead_server_is_transient(session: Session) -> None:
    (delivery_id,) = _setup(session, 1, ["ann@example.org"])  # nothing listens on port 1
    assert deliver(delivery_id).outcome is Outcome.RETRY
    assert "cannot connect" in (_delivery(delivery_id).last_error or "")


def test_suppressed_recipient_is_not_sent(session: Session, sink: SmtpSink) -> None:
    SuppressionEntryFactory(address="blocked@example.org", reason=SuppressionReason.COMPLAINT)
    session.commit()
    (delivery_id,) = _setup(session, sink.port, ["blocked@example.org"])
    assert deliver(delivery_id).outcome is Outcome.SUPPRESSED
    assert sink.handler.count() == 0
    assert _delivery(delivery_id).state is DeliveryState.SUPPRESSED


def test_no_provider_fails_with_a_clear_reason(session: Session) -> None:
    tenant, _ = create_tenant(session, "lonely")
    content = EmailContent.model_validate(
        {"from": "a@example.com", "to": ["b@example.org"], "subject": "x", "text": "y"}
    )
    (delivery_id,) = accept(session, tenant.id, content).delivery_ids
    session.commit()
    assert deliver(delivery_id).outcome is Outcome.FAILED
    assert "no active email provider" in (_delivery(delivery_id).last_error or "")
