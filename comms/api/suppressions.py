"""``/v1/suppressions``: the addresses a tenant will not send to."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from comms.api.auth import tenant_id as tenant_dep
from comms.api.problems import Problem
from comms.db import unit_of_work
from comms.models import SuppressionEntry, SuppressionReason
from comms.suppression import list_entries, suppress, unsuppress

router = APIRouter(prefix="/v1/suppressions", tags=["suppressions"])
TenantDep = Annotated[uuid.UUID, Depends(tenant_dep)]


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: EmailStr
    reason: SuppressionReason = SuppressionReason.MANUAL
    detail: str | None = Field(None, max_length=500)


def _view(entry: SuppressionEntry) -> dict[str, Any]:
    return {
        "address": entry.address,
        "reason": entry.reason.value,
        "scope": "platform" if entry.tenant_id is None else "tenant",
        "detail": entry.detail,
        "created_at": entry.created_at.isoformat(),
    }


@router.get("")
def list_suppressions(
    tenant_id: TenantDep,
    after: Annotated[str | None, Query(description="Keyset cursor: the last address seen")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Your suppressed addresses and platform-wide ones, by address."""
    with unit_of_work() as session:
        entries = [_view(e) for e in list_entries(session, tenant_id, after=after, limit=limit)]
    return {"items": entries, "next": entries[-1]["address"] if len(entries) == limit else None}


@router.post("", status_code=201)
def add_suppression(
    body: SuppressionIn, tenant_id: TenantDep, response: Response
) -> dict[str, Any]:
    with unit_of_work() as session:
        created = suppress(session, tenant_id, str(body.address), body.reason, body.detail)
    if not created:
        response.status_code = 200
    return {"address": str(body.address).lower(), "reason": body.reason.value, "created": created}


@router.delete("/{address}", status_code=204)
def remove_suppression(address: str, tenant_id: TenantDep) -> Response:
    """Remove your own entry (platform-wide entries are the operator's)."""
    with unit_of_work() as session:
        if not unsuppress(session, tenant_id, address):
            raise Problem(404, "Not found", f"{address} is not on your suppression list")
    return Response(status_code=204)
