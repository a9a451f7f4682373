"""``/v1/providers``: a tenant's own provider configurations (system defaults with an operator key).

Secrets are write-only: responses show them as a fixed mask.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from comms.api.auth import principal
from comms.api.problems import Problem
from comms.crypto import CryptoConfigError
from comms.db import unit_of_work
from comms.models import Channel, ProviderConfig
from comms.provider_configs import (
    check_provider,
    create_provider_config,
    public_view,
    update_provider_config,
)
from comms.providers import ConfigurationError
from comms.tenants import Principal

router = APIRouter(prefix="/v1/providers", tags=["providers"])
PrincipalDep = Annotated[Principal, Depends(principal)]


class ProviderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(min_length=1, max_length=64, description="See `comms providers list`")
    name: str = Field(min_length=1, max_length=200)
    channel: Channel | None = None
    priority: int = Field(0, ge=0, le=1000, description="Failover order: lower first")
    settings: dict[str, Any] = Field(default_factory=dict)


class ProviderPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=200)
    priority: int | None = Field(None, ge=0, le=1000)
    active: bool | None = None
    settings: dict[str, Any] | None = None


def _owned(session: Any, principal: Principal, config_id: str) -> ProviderConfig:
    try:
        config = session.get(ProviderConfig, uuid.UUID(config_id))
    except ValueError:
        config = None
    # another tenant's configuration is indistinguishable from a missing one
    if config is None or config.tenant_id != principal.tenant_id:
        raise Problem(404, "Not found", f"provider {config_id} does not exist")
    return config  # type: ignore[no-any-return]


def _invalid(exc: ConfigurationError) -> Problem:
    return Problem(422, "Invalid provider settings", exc.reason, "provider-settings",
                   errors=[{"field": "settings", "message": exc.reason}])  # fmt: skip


@router.get("")
def list_providers(principal: PrincipalDep) -> list[dict[str, Any]]:
    """Your provider configurations in failover order."""
    with unit_of_work() as session:
        owner = (
            ProviderConfig.tenant_id.is_(None)
            if principal.is_operator
            else ProviderConfig.tenant_id == principal.tenant_id
        )
        rows = session.scalars(
            select(ProviderConfig)
            .where(owner)
            .order_by(ProviderConfig.channel, ProviderConfig.priority, ProviderConfig.created_at)
        )
        return [public_view(c) for c in rows]


@router.post("", status_code=201)
def create_provider(body: ProviderIn, principal: PrincipalDep) -> dict[str, Any]:
    """Save a provider configuration (an operator key saves a system default)."""
    try:
        with unit_of_work() as session:
            config = create_provider_config(
                session, kind=body.kind, name=body.name, settings=body.settings,
                tenant_id=principal.tenant_id, channel=body.channel, priority=body.priority,
            )  # fmt: skip
            return public_view(config)
    except ConfigurationError as exc:
        raise _invalid(exc) from None
    except IntegrityError:
        raise Problem(
            409, "Name taken", f"a provider named {body.name!r} exists", "conflict"
        ) from None
    except CryptoConfigError as exc:
        raise Problem(500, "Server misconfigured", str(exc)) from None


@router.get("/{config_id}")
def get_provider(config_id: str, principal: PrincipalDep) -> dict[str, Any]:
    with unit_of_work() as session:
        return public_view(_owned(session, principal, config_id))


@router.patch("/{config_id}")
def patch_provider(config_id: str, body: ProviderPatch, principal: PrincipalDep) -> dict[str, Any]:
    """Change name, failover priority, active flag or settings (merged; secrets replaced)."""
    try:
        with unit_of_work() as session:
            config = update_provider_config(
                session, _owned(session, principal, config_id), name=body.name,
                priority=body.priority, active=body.active, settings=body.settings,
            )  # fmt: skip
            return public_view(config)
    except ConfigurationError as exc:
        raise _invalid(exc) from None
    except IntegrityError:
        raise Problem(
            409, "Name taken", f"a provider named {body.name!r} exists", "conflict"
        ) from None


@router.delete("/{config_id}", status_code=204)
def delete_provider(config_id: str, principal: PrincipalDep) -> Response:
    with unit_of_work() as session:
        session.delete(_owned(session, principal, config_id))
    return Response(status_code=204)


@router.post("/{config_id}/test")
def test_provider(config_id: str, principal: PrincipalDep) -> dict[str, Any]:
    """Check the credentials with a harmless call; says what is wrong if anything is."""
    with unit_of_work() as session:
        config = _owned(session, principal, config_id)
    ok, detail = check_provider(config)
    return {"id": config_id, "ok": ok, "detail": detail}
