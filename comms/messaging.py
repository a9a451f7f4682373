"""Turning a delivery command into Message and Delivery rows, once per idempotency key."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from comms import contract
from comms.commands import EmailContent, SmsContent
from comms.db import after_commit
from comms.dispatch import publish_many
from comms.models import Channel, Delivery, DeliveryState, Message, Tenant


class UnknownTenant(LookupError):
    pass


class IdempotencyConflict(ValueError):
    """The idempotency key was used before for a different message."""


@dataclass
class Accepted:
    message_id: uuid.UUID
    created: bool
    delivery_ids: list[uuid.UUID] = field(default_factory=list)


def accept(
    session: Session,
    tenant_id: uuid.UUID,
    content: EmailContent | SmsContent,
    *,
    idempotency_key: str | None = None,
    source: str = "api",
) -> Accepted:
    """Write the message and one pending delivery per recipient; publish after commit.

    A repeated idempotency key with the same content returns the first message
    and writes nothing; with different content it raises IdempotencyConflict.
    """
    if session.get(Tenant, tenant_id) is None:
        raise UnknownTenant(f"tenant {tenant_id} does not exist")
    channel = Channel.EMAIL if isinstance(content, EmailContent) else Channel.SMS
    recipients = content.recipients()
    stored = {**content.stored(), "to": recipients}
    message_id = uuid.uuid4()

    inserted = session.execute(
        insert(Message)
        .values(
            id=message_id,
            tenant_id=tenant_id,
            channel=channel,
            idempotency_key=idempotency_key,
            content=stored,
            source=source,
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
        .returning(Message.id)
    ).scalar_one_or_none()

    if inserted is None:
        existing = session.scalars(
            select(Message).where(
                Message.tenant_id == tenant_id, Message.idempotency_key == idempotency_key
            )
        ).one()
        if existing.content != stored or existing.channel != channel:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} was already used for a different message"
            )
        ids = list(session.scalars(select(Delivery.id).where(Delivery.message_id == existing.id)))
        return Accepted(message_id=existing.id, created=False, delivery_ids=ids)

    deliveries = [
        Delivery(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            message_id=message_id,
            recipient=recipient,
            state=DeliveryState.PENDING,
        )
        for recipient in recipients
    ]
    session.add_all(deliveries)
    session.flush()
    ids = [d.id for d in deliveries]
    after_commit(session, lambda: publish_deliveries(ids))
    return Accepted(message_id=message_id, created=True, delivery_ids=ids)


def publish_deliveries(delivery_ids: list[uuid.UUID]) -> None:
    publish_many(contract.DELIVER, ([str(i)] for i in delivery_ids))


class MessageNotFound(LookupError):
    pass


def message_status(
    session: Session, tenant_id: uuid.UUID, message_id: uuid.UUID
) -> dict[str, object]:
    """The message and each recipient's delivery state, as the API and CLI show it."""
    message = session.get(Message, message_id)
    if message is None or message.tenant_id != tenant_id:
        raise MessageNotFound(f"message {message_id} does not exist")
    deliveries = session.scalars(
        select(Delivery).where(Delivery.message_id == message_id).order_by(Delivery.created_at)
    ).all()
    return {
        "id": str(message.id),
        "channel": message.channel.value,
        "idempotency_key": message.idempotency_key,
        "created_at": message.created_at.isoformat(),
        "recipients": [
            {
                "delivery_id": str(d.id),
                "to": d.recipient,
                "status": d.state.value,
                "provider": d.provider,
                "provider_message_id": d.provider_message_id,
                "attempts": d.attempts,
                "error": d.last_error,
                "sent_at": d.sent_at.isoformat() if d.sent_at else None,
            }
            for d in deliveries
        ],
    }


def find_message_id(
    session: Session, tenant_id: uuid.UUID, idempotency_key: str
) -> uuid.UUID | None:
    return session.scalar(
        select(Message.id).where(
            Message.tenant_id == tenant_id, Message.idempotency_key == idempotency_key
        )
    )
