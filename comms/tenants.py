"""Tenants and their API keys (stored as SHA-256 digests, shown once)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from comms.models import ApiKey, Tenant

KEY_PREFIX = "ck_"


@dataclass(frozen=True)
class NewApiKey:
    tenant_id: uuid.UUID | None
    key_id: uuid.UUID
    key: str  # the only time the plain key exists


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_tenant(session: Session, name: str) -> tuple[Tenant, NewApiKey]:
    name = name.strip()
    if not name or len(name) > 200:
        raise ValueError("tenant name must be 1 to 200 characters")
    tenant = Tenant(id=uuid.uuid4(), name=name)
    session.add(tenant)
    session.flush()
    return tenant, issue_api_key(session, tenant.id)


def issue_api_key(session: Session, tenant_id: uuid.UUID, name: str = "default") -> NewApiKey:
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        id=uuid.uuid4(), tenant_id=tenant_id, prefix=prefix, key_hash=_digest(key), name=name
    )
    session.add(row)
    session.flush()
    return NewApiKey(tenant_id=tenant_id, key_id=row.id, key=key)


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for: a tenant, or the operator (system defaults, no tenant)."""

    tenant_id: uuid.UUID | None

    @property
    def is_operator(self) -> bool:
        return self.tenant_id is None


def issue_operator_key(session: Session, name: str = "operator") -> NewApiKey:
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        id=uuid.uuid4(), tenant_id=None, scope="operator", prefix=prefix,
        key_hash=_digest(key), name=name,
    )  # fmt: skip
    session.add(row)
    session.flush()
    return NewApiKey(tenant_id=None, key_id=row.id, key=key)


def principal_for(session: Session, key: str) -> Principal | None:
    """Whom a presented API key speaks for, or None (unknown, malformed or revoked)."""
    if not key.startswith(KEY_PREFIX) or key.count("_") < 2:
        return None
    prefix = key[len(KEY_PREFIX) :].split("_", 1)[0]
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, _digest(key)):
        return None
    if row.scope == "operator":
        return Principal(tenant_id=None)
    return Principal(tenant_id=row.tenant_id)


def authenticate(session: Session, key: str) -> uuid.UUID | None:
    """The tenant a presented tenant API key belongs to, or None (operator keys included)."""
    principal = principal_for(session, key)
    return principal.tenant_id if principal else None
