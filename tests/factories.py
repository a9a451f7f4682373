"""factory-boy factories for every model; bound to the test session by ``bind``."""

from __future__ import annotations

import uuid

import factory
from factory.alchemy import SQLAlchemyModelFactory
from sqlalchemy.orm import Session

from comms.models import (
    Campaign,
    CampaignStatus,
    Channel,
    Delivery,
    DeliveryState,
    Event,
    Message,
    ProviderConfig,
    Subscriber,
    SuppressionEntry,
    SuppressionReason,
    Tenant,
)

_current: list[Session] = []


def bind(session: Session) -> None:
    """Make the factories add their rows to ``session`` (the test's own)."""
    _current[:] = [session]


def _session() -> Session:
    assert _current, "factories are not bound to a session: use the `session` fixture"
    return _current[0]


class _Base(SQLAlchemyModelFactory):  # type: ignore[misc]
    class Meta:
        abstract = True
        sqlalchemy_session_factory = _session
        sqlalchemy_session_persistence = "flush"


class TenantFactory(_Base):
    class Meta:
        model = Tenant

    id = factory.LazyFunction(uuid.uuid4)
    name = factory.Sequence(lambda n: f"tenant-{n}")


class ProviderConfigFactory(_Base):
    class Meta:
        model = ProviderConfig

    id = factory.LazyFunction(uuid.uuid4)
    tenant_id = None
    name = factory.Sequence(lambda n: f"provider-{n}")
    kind = "console"
    channel = Channel.EMAIL
    settings = factory.LazyFunction(dict)
    priority = 0
    active = True


class MessageFactory(_Base):
    class Meta:
        model = Message

    id = factory.LazyFunction(uuid.uuid4)
    tenant_id = factory.LazyAttribute(lambda _: TenantFactory().id)
    channel = Channel.EMAIL
    content = factory.LazyFunction(
        lambda: {"from": "news@example.com", "subject": "Hello", "text": "Hi", "html": None}
    )
    source = "test"


class DeliveryFactory(_Base):
    class Meta:
        model = Delivery

    class Params:
        message = factory.SubFactory(MessageFactory)

    id = factory.LazyFunction(uuid.uuid4)
    message_id = factory.LazyAttribute(lambda o: o.message.id)
    tenant_id = factory.LazyAttribute(lambda o: o.message.tenant_id)
    recipient = factory.Sequence(lambda n: f"person{n}@example.org")
    state = DeliveryState.PENDING
    attempts = 0


class SubscriberFactory(_Base):
    class Meta:
        model = Subscriber

    id = factory.LazyFunction(uuid.uuid4)
    tenant_id = factory.LazyAttribute(lambda _: TenantFactory().id)
    email = factory.Sequence(lambda n: f"subscriber{n}@example.org")
    fields = factory.LazyFunction(lambda: {"first_name": "Ann"})
    tags = factory.LazyFunction(list)


class CampaignFactory(_Base):
    class Meta:
        model = Campaign

    id = factory.LazyFunction(uuid.uuid4)
    tenant_id = factory.LazyAttribute(lambda _: TenantFactory().id)
    name = factory.Sequence(lambda n: f"campaign-{n}")
    from_address = "news@example.com"
    subject = "News for {{ first_name }}"
    text_body = "Hello {{ first_name }}"
    audience = factory.LazyFunction(lambda: {"tags": []})
    status = CampaignStatus.DRAFT


class EventFactory(_Base):
    class Meta:
        model = Event

    id = factory.LazyFunction(uuid.uuid4)
    tenant_id = factory.LazyAttribute(lambda _: TenantFactory().id)
    type = "sent"
    data = factory.LazyFunction(dict)


class SuppressionEntryFactory(_Base):
    class Meta:
        model = SuppressionEntry

    id = factory.LazyFunction(uuid.uuid4)
    tenant_id = None
    address = factory.Sequence(lambda n: f"suppressed{n}@example.org")
    reason = SuppressionReason.MANUAL
