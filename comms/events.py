"""Delivery events: one vocabulary for every provider, recorded once, applied by compare-and-set.

Providers' reports are normalised into ``IncomingEvent`` by their webhook
parsers; ``record`` stores each one once (unique provider event id), moves the
Delivery's state only along the state machine (so duplicates and out-of-order
events change nothing: a late ``delivered`` never overwrites ``bounced``), and
feeds the suppression list.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from comms.deliveries import transition
from comms.models import Delivery, DeliveryState, Event, ProviderConfig, SuppressionReason
from comms.settings import get_settings
from comms.suppression import suppress

S = DeliveryState


class EventType(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    DELAYED = "delayed"
    BOUNCED = "bounced"
    SOFT_BOUNCED = "soft_bounced"
    COMPLAINED = "complained"
    REJECTED = "rejected"
    FAILED = "failed"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    REPLIED = "replied"
    AUTO_REPLIED = "auto_replied"


#: the state move each event type asks for: (states it may start from, new state)
STATE_MOVES: dict[EventType, tuple[tuple[DeliveryState, ...], DeliveryState]] = {
    EventType.DELIVERED: ((S.SENT,), S.DELIVERED),
    EventType.BOUNCED: ((S.SENT, S.DELIVERED), S.BOUNCED),
    EventType.COMPLAINED: ((S.SENT, S.DELIVERED, S.BOUNCED), S.COMPLAINED),
    EventType.REJECTED: ((S.SENDING, S.SENT), S.FAILED),
    EventType.FAILED: ((S.SENDING, S.SENT), S.FAILED),
}
ENGAGEMENT = frozenset({EventType.OPENED, EventType.CLICKED})


@dataclass(frozen=True)
class IncomingEvent:
    provider_event_id: str
    type: EventType
    occurred_at: datetime
    delivery_id: uuid.UUID | None = None
    provider_message_id: str | None = None
    recipient: str | None = None
    machine: bool = False  # an open by a privacy proxy or scanner, not a person
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recorded:
    event_id: uuid.UUID | None  # None: a duplicate, or no delivery of ours
    delivery_id: uuid.UUID | None
    state_changed: bool = False
    suppressed: bool = False


def find_delivery(session: Session, event: IncomingEvent) -> Delivery | None:
    if event.delivery_id is not None:
        found = session.get(Delivery, event.delivery_id)
        if found is not None:
            return found
    if event.provider_message_id:
        return session.scalars(
            select(Delivery).where(Delivery.provider_message_id == event.provider_message_id)
        ).first()
    return None


def record(session: Session, event: IncomingEvent) -> Recorded:
    """Store ``event`` once and apply it; safe to call again with the same event."""
    delivery = find_delivery(session, event)
    if delivery is None:
        return Recorded(None, None)
    event_id = session.execute(
        insert(Event)
        .values(
            id=uuid.uuid4(), tenant_id=delivery.tenant_id, delivery_id=delivery.id,
            type=event.type.value, provider_event_id=event.provider_event_id,
            occurred_at=event.occurred_at,
            data={**event.data, "machine": event.machine, "recipient": event.recipient},
        )
        .on_conflict_do_nothing(index_elements=["provider_event_id"])
        .returning(Event.id)
    ).scalar_one_or_none()  # fmt: skip
    if event_id is None:
        return Recorded(None, delivery.id)  # seen before: nothing more to do

    changed = False
    if event.type in STATE_MOVES:
        sources, target = STATE_MOVES[event.type]
        changed = transition(session, delivery.id, sources, target)
    suppressed = _suppress(session, delivery, event)
    return Recorded(event_id, delivery.id, changed, suppressed)


def _suppress(session: Session, delivery: Delivery, event: IncomingEvent) -> bool:
    address = event.recipient or delivery.recipient
    if event.type is EventType.BOUNCED:
        return suppress(session, delivery.tenant_id, address, SuppressionReason.HARD_BOUNCE,
                        event.data.get("diagnostic"))  # fmt: skip
    if event.type is EventType.SOFT_BOUNCED:
        soft = session.scalar(
            select(func.count())
            .select_from(Event)
            .join(Delivery, Delivery.id == Event.delivery_id)
            .where(
                Event.tenant_id == delivery.tenant_id,
                Event.type == EventType.SOFT_BOUNCED.value,
                Delivery.recipient == delivery.recipient,
            )
        )
        limit = get_settings().soft_bounce_limit
        if (soft or 0) >= limit:
            return suppress(session, delivery.tenant_id, address, SuppressionReason.HARD_BOUNCE,
                            f"{soft} soft bounces")  # fmt: skip
        return False
    if event.type is EventType.COMPLAINED:
        tenant_entry = suppress(session, delivery.tenant_id, address, SuppressionReason.COMPLAINT)
        system_default = delivery.provider_config_id is not None and session.scalar(
            select(ProviderConfig.tenant_id.is_(None)).where(
                ProviderConfig.id == delivery.provider_config_id
            )
        )
        if system_default:
            # a complaint through the shared default hurts every tenant's reputation
            suppress(session, None, address, SuppressionReason.COMPLAINT, "via system default")
        return tenant_entry
    if event.type is EventType.UNSUBSCRIBED:
        return suppress(session, delivery.tenant_id, address, SuppressionReason.UNSUBSCRIBE)
    return False
