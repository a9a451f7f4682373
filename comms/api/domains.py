"""``/v1/domains``: a tenant's sending domains, kept as code."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from comms.api.auth import tenant_id as tenant_dep
from comms.api.problems import Problem, validation_problem
from comms.db import unit_of_work
from comms.domains.dns import DnsError
from comms.domains.records import render
from comms.domains.service import (
    DomainError,
    add_domain,
    check,
    drift,
    publish,
    records_for,
    set_dns,
    view,
)
from comms.models import Domain

router = APIRouter(prefix="/v1/domains", tags=["domains"])
TenantDep = Annotated[uuid.UUID, Depends(tenant_dep)]


class DomainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=3, max_length=253, examples=["acme.example"])
    dns_provider: str | None = Field(None, description="cloudflare|route53|rfc2136|manual")
    dns_settings: dict[str, Any] = Field(default_factory=dict)
    region: str | None = None


class DnsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dns_provider: str
    dns_settings: dict[str, Any] = Field(default_factory=dict)


def _get(session: Any, domain_id: uuid.UUID, tenant_id: uuid.UUID) -> Domain:
    row = session.get(Domain, domain_id)
    if row is None or row.tenant_id != tenant_id:
        raise Problem(404, "Not found", f"no domain {domain_id}")
    return row  # type: ignore[no-any-return]


@router.post("", status_code=201)
def create(body: DomainIn, tenant_id: TenantDep) -> dict[str, Any]:
    try:
        with unit_of_work() as session:
            row = add_domain(
                session, tenant_id, body.name, dns_provider=body.dns_provider,
                dns_settings=body.dns_settings, region=body.region,
            )  # fmt: skip
            return view(row)
    except (DomainError, DnsError) as exc:
        raise validation_problem([{"field": "body", "message": str(exc)}]) from None


@router.get("")
def list_domains(tenant_id: TenantDep) -> dict[str, Any]:
    from sqlalchemy import select

    with unit_of_work() as session:
        rows = session.scalars(
            select(Domain).where(Domain.tenant_id == tenant_id).order_by(Domain.name)
        )
        return {"items": [view(r) for r in rows]}


@router.get("/{domain_id}")
def get_domain(domain_id: uuid.UUID, tenant_id: TenantDep) -> dict[str, Any]:
    with unit_of_work() as session:
        return view(_get(session, domain_id, tenant_id))


@router.get("/{domain_id}/records", response_model=None)
def get_records(
    domain_id: uuid.UUID,
    tenant_id: TenantDep,
    format: Annotated[str, Query(pattern="^(json|zone|table)$")] = "json",
) -> Response | list[dict[str, Any]]:
    with unit_of_work() as session:
        records = records_for(_get(session, domain_id, tenant_id))
    if format == "json":
        return [r.to_json() for r in records]
    return PlainTextResponse(render(records, format))


def _act(domain_id: uuid.UUID, tenant_id: uuid.UUID, action: str) -> dict[str, Any]:
    try:
        with unit_of_work() as session:
            row = _get(session, domain_id, tenant_id)
            if action == "publish":
                result = publish(session, row).to_json()
            elif action == "check":
                result = check(session, row).to_json()
            else:
                result = drift(session, row).to_json()
            return {"domain": view(row), action: result}
    except DnsError as exc:
        raise Problem(502, "DNS provider error", str(exc)) from None


@router.post("/{domain_id}:publish")
def publish_domain(domain_id: uuid.UUID, tenant_id: TenantDep) -> dict[str, Any]:
    """Create our records through the domain's DNS provider (never touches others)."""
    return _act(domain_id, tenant_id, "publish")


@router.post("/{domain_id}:check")
def check_domain(domain_id: uuid.UUID, tenant_id: TenantDep) -> dict[str, Any]:
    """Query live DNS and SES; move the state; advise."""
    return _act(domain_id, tenant_id, "check")


@router.post("/{domain_id}:drift")
def drift_domain(domain_id: uuid.UUID, tenant_id: TenantDep) -> dict[str, Any]:
    return _act(domain_id, tenant_id, "drift")


@router.delete("/{domain_id}")
def delete_domain(domain_id: uuid.UUID, tenant_id: TenantDep) -> dict[str, Any]:
    """Delete our records (never others'), the SES identity if unshared, and the domain."""
    from comms.domains.service import remove

    with unit_of_work() as session:
        return remove(session, _get(session, domain_id, tenant_id)).to_json()


@router.put("/{domain_id}/dns")
def put_dns(domain_id: uuid.UUID, body: DnsIn, tenant_id: TenantDep) -> dict[str, Any]:
    """New DNS provider credentials (write-only); resumes a paused sync."""
    try:
        with unit_of_work() as session:
            row = _get(session, domain_id, tenant_id)
            set_dns(session, row, body.dns_provider, body.dns_settings)
            return view(row)
    except (DomainError, DnsError) as exc:
        raise validation_problem([{"field": "dns_settings", "message": str(exc)}]) from None


class NotifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, max_length=2000, pattern=r"^https?://\S+$")


notify_router = APIRouter(tags=["domains"])


@notify_router.put("/v1/notifications")
def put_notifications(body: NotifyIn, tenant_id: TenantDep) -> dict[str, Any]:
    """Where notices about your domains go (signed POSTs); the secret is returned here only."""
    from comms.domains.service import notify_secret
    from comms.models import Tenant

    with unit_of_work() as session:
        session.get_one(Tenant, tenant_id).notify_url = body.url
    answer: dict[str, Any] = {"url": body.url}
    if body.url:
        answer["signing_secret"] = notify_secret(tenant_id)
    return answer
