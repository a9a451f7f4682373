"""``/v1/campaigns`` and ``/v1/subscribers:batch``."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import select

from comms.api.auth import tenant_id as tenant_dep
from comms.api.problems import Problem, validation_problem
from comms.campaigns import (
    CampaignError,
    CampaignIn,
    cancel,
    create_from,
    fire,
    pause,
    progress,
    resume,
)
from comms.commands import CommandError
from comms.db import unit_of_work
from comms.models import Campaign
from comms.subscribers import SubscriberBatch, upsert_subscribers

router = APIRouter(tags=["campaigns"])
TenantDep = Annotated[uuid.UUID, Depends(tenant_dep)]


def _id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise Problem(404, "Not found", f"campaign {value} does not exist") from None


def _problem(exc: CampaignError) -> Problem:
    if "does not exist" in str(exc):
        return Problem(404, "Not found", str(exc))
    return Problem(409, "Not allowed now", str(exc), "campaign-state")


@router.post("/v1/campaigns", status_code=201)
def create_campaign(body: CampaignIn, tenant_id: TenantDep) -> dict[str, Any]:
    """A draft campaign; `{{ field }}` merge fields come from each subscriber."""
    with unit_of_work() as session:
        campaign = create_from(session, tenant_id, body)
        return progress(session, campaign.id).as_dict() | {"name": campaign.name}


@router.get("/v1/campaigns")
def list_campaigns(tenant_id: TenantDep) -> list[dict[str, Any]]:
    with unit_of_work() as session:
        rows = session.scalars(
            select(Campaign).where(Campaign.tenant_id == tenant_id).order_by(Campaign.created_at)
        ).all()
        return [
            {"id": str(c.id), "name": c.name, "status": c.status.value,
             "created_at": c.created_at.isoformat()}
            for c in rows
        ]  # fmt: skip


@router.get("/v1/campaigns/{campaign_id}")
def campaign_status(campaign_id: str, tenant_id: TenantDep) -> dict[str, Any]:
    """Status and live counts per delivery state."""
    with unit_of_work() as session:
        campaign = session.get(Campaign, _id(campaign_id))
        if campaign is None or campaign.tenant_id != tenant_id:
            raise Problem(404, "Not found", f"campaign {campaign_id} does not exist")
        return progress(session, campaign.id).as_dict() | {"name": campaign.name}


def _action(campaign_id: str, tenant_id: uuid.UUID, verb: str) -> dict[str, Any]:
    cid = _id(campaign_id)
    try:
        with unit_of_work() as session:
            if verb == "fire":
                fire(session, cid, tenant_id)
            elif verb == "pause":
                pause(session, cid, tenant_id)
            elif verb == "resume":
                resume(session, cid, tenant_id)
            else:
                cancel(session, cid, tenant_id)
    except CampaignError as exc:
        raise _problem(exc) from None
    with unit_of_work() as session:
        return progress(session, cid).as_dict()


@router.post("/v1/campaigns/{campaign_id}:fire")
def fire_campaign(campaign_id: str, tenant_id: TenantDep) -> dict[str, Any]:
    """Start the fan-out; a campaign fires once."""
    return _action(campaign_id, tenant_id, "fire")


@router.post("/v1/campaigns/{campaign_id}:pause")
def pause_campaign(campaign_id: str, tenant_id: TenantDep) -> dict[str, Any]:
    return _action(campaign_id, tenant_id, "pause")


@router.post("/v1/campaigns/{campaign_id}:resume")
def resume_campaign(campaign_id: str, tenant_id: TenantDep) -> dict[str, Any]:
    return _action(campaign_id, tenant_id, "resume")


@router.post("/v1/campaigns/{campaign_id}:cancel")
def cancel_campaign(campaign_id: str, tenant_id: TenantDep) -> dict[str, Any]:
    """Everything not yet sent is cancelled."""
    return _action(campaign_id, tenant_id, "cancel")


@router.post("/v1/subscribers:batch", tags=["subscribers"])
def import_subscribers(body: SubscriberBatch, tenant_id: TenantDep) -> dict[str, int]:
    """Insert or update up to 10,000 subscribers by email; all or nothing."""
    try:
        with unit_of_work() as session:
            report = upsert_subscribers(session, tenant_id, body.subscribers)
    except CommandError as exc:
        raise validation_problem(exc.errors) from None
    return {"received": report.received, "written": report.written}
