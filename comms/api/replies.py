"""``/v1/replies`` and ``/v1/inbound``: a tenant's inbound replies and where they go."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from comms.api.auth import tenant_id as tenant_dep
from comms.api.problems import Problem, validation_problem
from comms.db import unit_of_work
from comms.inbound.replies import (
    InboundSettingError,
    consumer_secret,
    list_replies,
    reply_view,
    set_consumer,
    set_reply_domain,
)
from comms.models import InboundReply, Tenant

router = APIRouter(tags=["replies"])
TenantDep = Annotated[uuid.UUID, Depends(tenant_dep)]


@router.get("/v1/replies")
def get_replies(
    tenant_id: TenantDep,
    kind: Annotated[str | None, Query(pattern="^(reply|auto_reply|bounce|spam)$")] = None,
    before: Annotated[uuid.UUID | None, Query(description="Keyset: last id seen")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """Inbound messages, newest first: replies threaded to their delivery, and the rest."""
    with unit_of_work() as session:
        items = [
            reply_view(r)
            for r in list_replies(session, tenant_id, kind=kind, before=before, limit=limit)
        ]
    return {"items": items, "next": items[-1]["id"] if len(items) == limit else None}


@router.get("/v1/replies/{reply_id}")
def get_reply(reply_id: uuid.UUID, tenant_id: TenantDep) -> dict[str, Any]:
    with unit_of_work() as session:
        reply = session.get(InboundReply, reply_id)
        if reply is None or reply.tenant_id != tenant_id:
            raise Problem(404, "Not found", f"no reply {reply_id}")
        return reply_view(reply)


class InboundIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reply_domain: str | None = Field(None, max_length=253, examples=["news.acme.example"])
    consumer_url: str | None = Field(None, max_length=2000)


@router.get("/v1/inbound")
def get_inbound(tenant_id: TenantDep) -> dict[str, Any]:
    """Where your replies arrive and where they are forwarded (the secret is not shown)."""
    with unit_of_work() as session:
        tenant = session.get_one(Tenant, tenant_id)
        return {"reply_domain": tenant.reply_domain, "consumer_url": tenant.reply_consumer_url}


@router.put("/v1/inbound")
def put_inbound(body: InboundIn, tenant_id: TenantDep) -> dict[str, Any]:
    """Set the reply domain and consumer. The consumer's signing secret is returned here only."""
    try:
        with unit_of_work() as session:
            set_reply_domain(session, tenant_id, body.reply_domain)
            released = set_consumer(session, tenant_id, body.consumer_url)
    except InboundSettingError as exc:
        raise validation_problem([{"field": "body", "message": str(exc)}]) from None
    answer: dict[str, Any] = {
        "reply_domain": body.reply_domain.lower().rstrip(".") if body.reply_domain else None,
        "consumer_url": body.consumer_url,
        "released": released,
    }
    if body.consumer_url:
        answer["signing_secret"] = consumer_secret(tenant_id)
    return answer
