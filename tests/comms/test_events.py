"""Recording delivery events: once, in order-independent states, feeding suppression."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms.events import EventType, IncomingEvent, record
from comms.models import (
    Delivery,
    DeliveryState,
    Event,
    SuppressionEntry,
    SuppressionReason,
)
from comms.provider_events import is_machine_open, parse_ses
from comms.suppression import suppression_reason
from tests.factories import DeliveryFactory, ProviderConfigFactory

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _event(delivery: Delivery, type_: EventType, eid: str | None = None) -> IncomingEvent:
    return IncomingEvent(
        provider_event_id=eid or f"test:{uuid.uuid4()}", type=type_, occurred_at=NOW,
        delivery_id=delivery.id, recipient=delivery.recipient,
    )  # fmt: skip


def _state(session: Session, delivery: Delivery) -> DeliveryState:
    session.expire_all()
    return session.get_one(Delivery, delivery.id).state


def test_the_same_event_twice_is_recorded_once(session: Session) -> None:
    d = DeliveryFactory(state=DeliveryState.SENT)
    first = record(session, _event(d, EventType.DELIVERED, "sns:1"))
    again = record(session, _event(d, EventType.DELIVERED, "sns:1"))
    assert first.event_id is not None and again.event_id is None
    assert session.scalar(select(func.count()).select_from(Event)) == 1
    assert _state(session, d) is DeliveryState.DELIVERED


def test_a_late_delivered_never_overwrites_bounced(session: Session) -> None:
    d = DeliveryFactory(state=DeliveryState.SENT)
    record(session, _event(d, EventType.BOUNCED))
    late = record(session, _event(d, EventType.DELIVERED))
    assert late.event_id is not None and not late.state_changed
    assert _state(session, d) is DeliveryState.BOUNCED


def test_hard_bounce_suppresses_for_the_tenant(session: Session) -> None:
    d = DeliveryFactory(state=DeliveryState.SENT, recipient="Gone@Example.org")
    assert record(session, _event(d, EventType.BOUNCED)).suppressed
    assert suppression_reason(session, d.tenant_id, "gone@example.org") is (
        SuppressionReason.HARD_BOUNCE
    )
    # transactional mail ignores unsubscribes, never a hard bounce
    assert suppression_reason(session, d.tenant_id, "gone@example.org", transactional=True)


def test_soft_bounces_suppress_after_the_limit(session: Session) -> None:
    deliveries = [DeliveryFactory(state=DeliveryState.SENT, recipient="flaky@example.org")]
    tenant = deliveries[0].tenant_id
    message = deliveries[0].message_id
    deliveries += [
        DeliveryFactory(state=DeliveryState.SENT, recipient="flaky@example.org",
                        tenant_id=tenant, message_id=message)
        for _ in range(2)
    ]  # fmt: skip
    results = [record(session, _event(d, EventType.SOFT_BOUNCED)).suppressed for d in deliveries]
    assert results == [False, False, True]  # the default limit is 3


def test_complaint_through_the_system_default_is_platform_wide(session: Session) -> None:
    default = ProviderConfigFactory(tenant_id=None)
    d = DeliveryFactory(state=DeliveryState.SENT, provider_config_id=default.id)
    record(session, _event(d, EventType.COMPLAINED))
    scopes = set(
        session.scalars(
            select(SuppressionEntry.tenant_id).where(SuppressionEntry.address == d.recipient)
        )
    )
    assert scopes == {d.tenant_id, None}
    assert suppression_reason(session, uuid.uuid4(), d.recipient) is SuppressionReason.COMPLAINT


def test_unsubscribe_is_ignored_by_transactional_mail_only(session: Session) -> None:
    d = DeliveryFactory(state=DeliveryState.SENT)
    record(session, _event(d, EventType.UNSUBSCRIBED))
    assert suppression_reason(session, d.tenant_id, d.recipient) is SuppressionReason.UNSUBSCRIBE
    assert suppression_reason(session, d.tenant_id, d.recipient, transactional=True) is None


def _ses(event_type: str, **extra: object) -> str:
    mail = {"messageId": "0100-abc", "destination": ["ann@example.org"],
            "timestamp": "2026-11-24T10:00:00.000Z",
            "tags": {"delivery_id": ["7b1e2c9a-1111-4222-8333-944455556666"]}}  # fmt: skip
    return json.dumps({"eventType": event_type, "mail": mail, **extra})


def test_ses_event_shapes() -> None:
    (bounce,) = parse_ses("m1", _ses("Bounce", bounce={
        "bounceType": "Permanent", "bounceSubType": "General", "timestamp": "2026-11-24T10:01:00Z",
        "bouncedRecipients": [{"emailAddress": "ann@example.org", "status": "5.1.1",
                               "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}))  # fmt: skip
    assert bounce.type is EventType.BOUNCED and bounce.provider_event_id == "sns:m1"
    assert str(bounce.delivery_id) == "7b1e2c9a-1111-4222-8333-944455556666"
    assert bounce.data["diagnostic"] == "smtp; 550 5.1.1 user unknown"
    (soft,) = parse_ses(
        "m2", _ses("Bounce", bounce={"bounceType": "Transient", "bounceSubType": "MailboxFull"})
    )
    assert soft.type is EventType.SOFT_BOUNCED
    (complaint,) = parse_ses("m3", _ses("Complaint", complaint={
        "complainedRecipients": [{"emailAddress": "ann@example.org"}],
        "complaintFeedbackType": "abuse", "timestamp": "2026-11-24T11:00:00Z"}))  # fmt: skip
    assert complaint.type is EventType.COMPLAINED
    types = {
        name: parse_ses("x", _ses(name))[0].type
        for name in ("Send", "Delivery", "Reject", "DeliveryDelay", "Rendering Failure",
                     "Subscription", "Open", "Click")
    }  # fmt: skip
    assert types == {
        "Send": EventType.QUEUED, "Delivery": EventType.DELIVERED, "Reject": EventType.REJECTED,
        "DeliveryDelay": EventType.DELAYED, "Rendering Failure": EventType.FAILED,
        "Subscription": EventType.UNSUBSCRIBED, "Open": EventType.OPENED,
        "Click": EventType.CLICKED,
    }  # fmt: skip
    notification = json.dumps({"notificationType": "Delivery", "mail": {"messageId": "z"},
                               "delivery": {"timestamp": "2026-11-24T10:00:00Z"}})  # fmt: skip
    assert parse_ses("n", notification)[0].provider_message_id == "z"


def test_machine_opens() -> None:
    apple = (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    )
    assert is_machine_open(apple, "17.58.1.2")
    assert is_machine_open("Mozilla/5.0 (compatible; Barracuda Sentinel)", "1.2.3.4")
    assert not is_machine_open(
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148",
        "81.2.3.4",
    )
