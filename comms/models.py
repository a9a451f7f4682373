"""The domain's tables: typed SQLAlchemy 2.0 models on one declarative base."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UUIDPk = Annotated[uuid.UUID, mapped_column(primary_key=True, default=uuid.uuid4)]
Created = Annotated[
    datetime, mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)
]
Timestamp = Annotated[datetime | None, mapped_column(DateTime(timezone=True), nullable=True)]
Json = Annotated[dict[str, Any], mapped_column(JSONB, nullable=False, default=dict)]
TenantFk = Annotated[
    uuid.UUID, mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # persisted by value, so the database reads the same words as the API
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e])


class Channel(enum.StrEnum):
    EMAIL = "email"
    SMS = "sms"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class CampaignStatus(enum.StrEnum):
    DRAFT = "draft"
    FIRING = "firing"
    SENDING = "sending"
    DONE = "done"
    PAUSED = "paused"
    CANCELLED = "cancelled"


class SuppressionReason(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    MANUAL = "manual"


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[UUIDPk]
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[Created]
    #: where replies to this tenant's campaign mail arrive: ``reply+TOKEN@<reply_domain>``
    reply_domain: Mapped[str | None] = mapped_column(String(253), nullable=True, unique=True)
    #: the contact-intelligence consumer that gets each reply (signed POST); None holds them
    reply_consumer_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    #: where notices about the tenant's domains (drift, paused DNS sync) are POSTed, signed
    notify_url: Mapped[str | None] = mapped_column(String(2000), nullable=True)


class ApiKey(Base):
    """A tenant API key; only a SHA-256 of the key is stored, the key is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[UUIDPk]
    #: NULL for an operator key (manages system defaults, belongs to no tenant)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, nullable=True
    )
    scope: Mapped[str] = mapped_column(String(16), default="tenant", server_default="tenant")
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="default")
    created_at: Mapped[Created]
    revoked_at: Mapped[Timestamp]


class ProviderConfig(Base):
    """How to reach one provider. ``tenant_id`` NULL is a system default.

    ``settings`` holds the non-secret fields; ``secrets`` the envelope-encrypted
    secret fields (see ``comms.crypto``), never plain text.
    """

    __tablename__ = "provider_configs"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[UUIDPk]
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True, nullable=True
    )
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(64))
    channel: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    settings: Mapped[Json]
    secrets: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[Created]
    updated_at: Mapped[Created]


class Message(Base):
    """One logical send (an email or SMS to one or more recipients)."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    id: Mapped[UUIDPk]
    tenant_id: Mapped[TenantFk]
    channel: Mapped[Channel] = mapped_column(_enum(Channel, "channel"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    content: Mapped[Json]
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True, index=True
    )
    source: Mapped[str] = mapped_column(String(32), default="api")
    created_at: Mapped[Created]


class Delivery(Base):
    """One recipient of one message, and where its send stands.

    Every change of ``state`` is a compare-and-set (see ``comms.deliveries``).
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("campaign_id", "subscriber_id"),
        Index(
            "ix_deliveries_due",
            "due_at",
            postgresql_where=text("state = 'scheduled'"),
        ),
        Index(
            "ix_deliveries_in_flight",
            "updated_at",
            postgresql_where=text("state IN ('pending', 'sending')"),
        ),
    )

    id: Mapped[UUIDPk]
    tenant_id: Mapped[TenantFk]
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    recipient: Mapped[str] = mapped_column(String(320))
    state: Mapped[DeliveryState] = mapped_column(
        _enum(DeliveryState, "delivery_state"), default=DeliveryState.PENDING
    )
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=True
    )
    subscriber_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True
    )
    provider_config_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("provider_configs.id", ondelete="SET NULL"), nullable=True
    )
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    provider_message_id: Mapped[str | None] = mapped_column(String(500), nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: position in the tenant's failover list the next attempt uses
    failover_index: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    due_at: Mapped[Timestamp]
    lease_until: Mapped[Timestamp]
    sent_at: Mapped[Timestamp]
    created_at: Mapped[Created]
    updated_at: Mapped[Created]


class Event(Base):
    __tablename__ = "events"

    id: Mapped[UUIDPk]
    tenant_id: Mapped[TenantFk]
    delivery_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=True, index=True
    )
    type: Mapped[str] = mapped_column(String(32))
    provider_event_id: Mapped[str | None] = mapped_column(String(300), nullable=True, unique=True)
    occurred_at: Mapped[Created]
    data: Mapped[Json]


class Subscriber(Base):
    __tablename__ = "subscribers"
    __table_args__ = (
        UniqueConstraint("tenant_id", "email"),
        Index("ix_subscribers_tenant_keyset", "tenant_id", "id"),  # campaign fan-out pages
    )

    id: Mapped[UUIDPk]
    tenant_id: Mapped[TenantFk]
    email: Mapped[str] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32), nullable=True)
    fields: Mapped[Json]
    tags: Mapped[list[str]] = mapped_column(ARRAY(String(100)), default=list)
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[Created]


class Campaign(Base):
    __tablename__ = "campaigns"

    id: Mapped[UUIDPk]
    tenant_id: Mapped[TenantFk]
    name: Mapped[str] = mapped_column(String(200))
    from_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    text_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    html_body: Mapped[str | None] = mapped_column(Text, nullable=True)
    audience: Mapped[Json]
    status: Mapped[CampaignStatus] = mapped_column(
        _enum(CampaignStatus, "campaign_status"), default=CampaignStatus.DRAFT
    )
    send_time_optimisation: Mapped[bool] = mapped_column(Boolean, default=False)
    #: open pixel and signed click redirects, for providers that do not track themselves
    tracking: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    #: replaces ``{{ ai_intro }}`` until personalised intros exist
    fallback_intro: Mapped[str | None] = mapped_column(Text, nullable=True)
    message_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    #: last subscriber id the fan-out reached; NULL before the first batch
    fanout_cursor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fanout_done: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    #: batches the fan-out needs (known once the last one is found) and has finished
    fanout_batches: Mapped[int | None] = mapped_column(Integer, nullable=True)
    fanout_completed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[Created]
    fired_at: Mapped[Timestamp]


class SubscriberEngagement(Base):
    """A subscriber's send-time model: 168 hour-of-week open propensities in local time."""

    __tablename__ = "subscriber_engagement"

    subscriber_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True
    )
    tenant_id: Mapped[TenantFk]
    #: 168 little-endian float32 (see ``schedulers.sendtime.pack_histogram``): a batch of
    #: a thousand loads without parsing text
    histogram: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    evidence: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[Created]


class SuppressionEntry(Base):
    """An address we must not send to; ``tenant_id`` NULL applies platform-wide."""

    __tablename__ = "suppression_entries"
    # one entry per address per tenant, and one platform-wide (tenant NULL)
    __table_args__ = (UniqueConstraint("tenant_id", "address", postgresql_nulls_not_distinct=True),)

    id: Mapped[UUIDPk]
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True, index=True
    )
    address: Mapped[str] = mapped_column(String(320), index=True)
    reason: Mapped[SuppressionReason] = mapped_column(
        _enum(SuppressionReason, "suppression_reason")
    )
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[Created]


class InboundReply(Base):
    """A message that arrived at a ``reply+TOKEN@`` address, threaded to what it answers."""

    __tablename__ = "inbound_replies"
    __table_args__ = (
        Index(
            "ix_inbound_replies_forward_due",
            "next_forward_at",
            postgresql_where=text("forwarded_at IS NULL AND threaded_at IS NOT NULL"),
        ),
        Index("ix_inbound_replies_tenant_keyset", "tenant_id", "received_at", "id"),
    )

    id: Mapped[UUIDPk]
    tenant_id: Mapped[TenantFk]
    #: the stored raw message; the row is written once per stored message
    raw_key: Mapped[str] = mapped_column(String(300), unique=True)
    delivery_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), nullable=True, index=True
    )
    subscriber_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True, index=True
    )
    campaign_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # reply | auto_reply | bounce | spam
    from_address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    subject: Mapped[str | None] = mapped_column(Text, nullable=True)
    message_id_header: Mapped[str | None] = mapped_column(String(998), nullable=True)
    text: Mapped[str] = mapped_column(Text, default="")
    html: Mapped[str | None] = mapped_column(Text, nullable=True)
    dkim: Mapped[str] = mapped_column(String(16), default="none")
    spf: Mapped[str] = mapped_column(String(16), default="none")
    dmarc: Mapped[str] = mapped_column(String(16), default="none")
    spam_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    auto_reply: Mapped[bool] = mapped_column(Boolean, default=False)
    details: Mapped[Json]
    received_at: Mapped[Created]
    threaded_at: Mapped[Timestamp]
    forwarded_at: Mapped[Timestamp]
    forward_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_forward_at: Mapped[Timestamp]
    last_forward_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class DomainState(enum.StrEnum):
    PENDING = "pending"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    FAILED = "failed"
    DRIFTED = "drifted"


class Domain(Base):
    """A tenant's sending domain (and its ``news.`` reply subdomain), kept as code."""

    __tablename__ = "domains"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[UUIDPk]
    tenant_id: Mapped[TenantFk]
    #: ASCII (punycode) form, lower case, no trailing dot
    name: Mapped[str] = mapped_column(String(253), index=True)
    region: Mapped[str] = mapped_column(String(32))
    state: Mapped[DomainState] = mapped_column(
        _enum(DomainState, "domain_state"), default=DomainState.PENDING
    )
    #: the tenant's proof of control, published as _comms-challenge TXT
    challenge: Mapped[str] = mapped_column(String(64))
    dkim_tokens: Mapped[list[str]] = mapped_column(ARRAY(String(128)), default=list)
    dns_provider: Mapped[str] = mapped_column(String(32), default="manual")
    dns_settings: Mapped[Json]
    dns_secrets: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    #: why DNS sync is paused (a revoked or under-scoped token); None when it runs
    sync_paused: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the records we created at the DNS provider: the only ones we change or delete
    published: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    findings: Mapped[Json]
    checked_at: Mapped[Timestamp]
    verified_at: Mapped[Timestamp]
    created_at: Mapped[Created]
    updated_at: Mapped[Created]
