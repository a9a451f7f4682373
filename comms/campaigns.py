"""Campaigns: a templated message to an audience of subscribers, fired once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from comms import contract
from comms.db import after_commit
from comms.dispatch import publish
from comms.models import (
    Campaign,
    CampaignStatus,
    Channel,
    Delivery,
    DeliveryState,
    Message,
    Subscriber,
)

OPEN_STATES = (DeliveryState.PENDING, DeliveryState.SCHEDULED, DeliveryState.SENDING)


class CampaignError(ValueError):
    pass


def create_campaign(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    name: str,
    sender: str,
    subject: str,
    text: str | None = None,
    html: str | None = None,
    tags: list[str] | None = None,
    send_time_optimisation: bool = False,
    fallback_intro: str | None = None,
    tracking: bool = False,
) -> Campaign:
    if not text and not html:
        raise CampaignError("a campaign needs a text or an html body")
    campaign = Campaign(
        send_time_optimisation=send_time_optimisation,
        fallback_intro=fallback_intro,
        tracking=tracking,
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=name,
        from_address=sender,
        subject=subject,
        text_body=text,
        html_body=html,
        audience={"tags": tags or []},
        status=CampaignStatus.DRAFT,
    )
    session.add(campaign)
    session.flush()
    message = Message(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        channel=Channel.EMAIL,
        content={"from": sender, "subject": subject, "text": text, "html": html},
        campaign_id=campaign.id,
        source="campaign",
    )
    session.add(message)
    campaign.message_id = message.id
    session.flush()
    return campaign


def audience_query(campaign: Campaign) -> Select[uuid.UUID, str]:
    query = select(Subscriber.id, Subscriber.email).where(
        Subscriber.tenant_id == campaign.tenant_id
    )
    tags: list[str] = campaign.audience.get("tags") or []
    if tags:
        query = query.where(Subscriber.tags.overlap(tags))
    return query


def get_campaign(session: Session, campaign_id: uuid.UUID, tenant_id: uuid.UUID) -> Campaign:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None or campaign.tenant_id != tenant_id:
        raise CampaignError(f"campaign {campaign_id} does not exist")
    return campaign


def _move(
    session: Session,
    campaign_id: uuid.UUID,
    tenant_id: uuid.UUID,
    sources: tuple[CampaignStatus, ...],
    target: CampaignStatus,
    verb: str,
) -> Campaign:
    campaign = get_campaign(session, campaign_id, tenant_id)
    moved = session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status.in_(sources))
        .values(status=target)
    ).rowcount  # type: ignore[attr-defined]
    if not moved:
        allowed = " or ".join(s.value for s in sources)
        raise CampaignError(f"campaign is {campaign.status.value}; only {allowed} can be {verb}")
    session.refresh(campaign)
    return campaign


def pause(session: Session, campaign_id: uuid.UUID, tenant_id: uuid.UUID) -> Campaign:
    """Stop publishing: the fan-out halts and due sends wait, nothing is lost."""
    return _move(
        session, campaign_id, tenant_id,
        (CampaignStatus.FIRING, CampaignStatus.SENDING), CampaignStatus.PAUSED, "paused",
    )  # fmt: skip


def resume(session: Session, campaign_id: uuid.UUID, tenant_id: uuid.UUID) -> Campaign:
    """Continue where the pause stopped: the fan-out from its cursor, sends when due."""
    campaign = get_campaign(session, campaign_id, tenant_id)
    target = CampaignStatus.SENDING if campaign.fanout_done else CampaignStatus.FIRING
    campaign = _move(session, campaign_id, tenant_id, (CampaignStatus.PAUSED,), target, "resumed")
    if target is CampaignStatus.FIRING:
        # batches run in parallel, so some after the cursor may not have finished when the
        # pause came: start over from the beginning; finished batches insert nothing again
        campaign.fanout_completed = 0
        campaign.fanout_batches = None
        after_commit(session, lambda: publish(contract.FANOUT, [str(campaign_id), "", 0]))
    return campaign


def cancel(session: Session, campaign_id: uuid.UUID, tenant_id: uuid.UUID) -> int:
    """Cancel: everything not yet sent is marked cancelled. Returns how many deliveries."""
    live = (
        CampaignStatus.DRAFT,
        CampaignStatus.FIRING,
        CampaignStatus.SENDING,
        CampaignStatus.PAUSED,
    )
    _move(session, campaign_id, tenant_id, live, CampaignStatus.CANCELLED, "cancelled")
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.campaign_id == campaign_id,
            Delivery.state.in_((DeliveryState.PENDING, DeliveryState.SCHEDULED)),
        )
        .values(state=DeliveryState.CANCELLED, updated_at=func.now(), last_error="cancelled")
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def fire(session: Session, campaign_id: uuid.UUID, tenant_id: uuid.UUID) -> None:
    """Start the fan-out (draft → firing); firing twice is refused, never sent twice."""
    moved = session.execute(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.tenant_id == tenant_id,
            Campaign.status == CampaignStatus.DRAFT,
        )
        .values(status=CampaignStatus.FIRING, fired_at=func.now())
    ).rowcount  # type: ignore[attr-defined]
    if not moved:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.tenant_id != tenant_id:
            raise CampaignError(f"campaign {campaign_id} does not exist")
        raise CampaignError(f"campaign is {campaign.status.value}; only a draft can be fired")
    after_commit(session, lambda: publish(contract.FANOUT, [str(campaign_id), "", 0]))


@dataclass(frozen=True)
class CampaignProgress:
    campaign_id: uuid.UUID
    status: str
    audience: int
    counts: dict[str, int]

    @property
    def settled(self) -> int:
        return sum(n for state, n in self.counts.items() if state not in OPEN_STATES)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.campaign_id),
            "status": self.status,
            "audience": self.audience,
            "settled": self.settled,
            "counts": self.counts,
        }


def progress(session: Session, campaign_id: uuid.UUID) -> CampaignProgress:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise CampaignError(f"campaign {campaign_id} does not exist")
    counts = {
        state.value: n
        for state, n in session.execute(
            select(Delivery.state, func.count())
            .where(Delivery.campaign_id == campaign_id)
            .group_by(Delivery.state)
        )
    }
    audience = session.scalar(select(func.count()).select_from(audience_query(campaign).subquery()))
    return CampaignProgress(campaign.id, campaign.status.value, int(audience or 0), counts)


def settle_finished_campaigns(session: Session) -> int:
    """Campaigns whose fan-out finished and whose deliveries all settled become done."""
    open_delivery = (
        select(Delivery.id)
        .where(Delivery.campaign_id == Campaign.id, Delivery.state.in_(OPEN_STATES))
        .exists()
    )
    result = session.execute(
        update(Campaign)
        .where(Campaign.status == CampaignStatus.SENDING, ~open_delivery)
        .values(status=CampaignStatus.DONE)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


class CampaignIn(BaseModel):
    """A new campaign, as the API and CLI accept it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=200)
    sender: EmailStr = Field(alias="from")
    subject: str = Field(min_length=1, max_length=998)
    text: str | None = Field(None, max_length=1_000_000)
    html: str | None = Field(None, max_length=2_000_000)
    tags: list[str] = Field(
        default_factory=list, max_length=50, description="Audience: subscribers with any tag"
    )
    send_time_optimisation: bool = False
    tracking: bool = Field(
        False,
        description="Open pixel and signed click redirects (SMTP and other non-tracking providers)",
    )
    fallback_intro: str | None = Field(None, max_length=5000, description="Fills {{ ai_intro }}")

    @model_validator(mode="after")
    def _has_body(self) -> CampaignIn:
        if not self.text and not self.html:
            raise ValueError("one of 'text' or 'html' is required")
        return self


def create_from(session: Session, tenant_id: uuid.UUID, body: CampaignIn) -> Campaign:
    return create_campaign(
        session, tenant_id, name=body.name, sender=str(body.sender), subject=body.subject,
        text=body.text, html=body.html, tags=body.tags,
        send_time_optimisation=body.send_time_optimisation, fallback_intro=body.fallback_intro,
        tracking=body.tracking,
    )  # fmt: skip
