"""The suppression list: addresses a tenant (or the whole platform) must not be sent to."""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from comms.models import SuppressionEntry, SuppressionReason


def suppression_reason(
    session: Session, tenant_id: uuid.UUID, address: str
) -> SuppressionReason | None:
    """Why ``address`` is suppressed for this tenant (or platform-wide), or None."""
    return session.scalar(
        select(SuppressionEntry.reason)
        .where(
            SuppressionEntry.address == address.lower(),
            or_(SuppressionEntry.tenant_id == tenant_id, SuppressionEntry.tenant_id.is_(None)),
        )
        .limit(1)
    )


def suppressed_addresses(session: Session, tenant_id: uuid.UUID, addresses: list[str]) -> set[str]:
    lowered = [a.lower() for a in addresses]
    rows = session.scalars(
        select(SuppressionEntry.address).where(
            SuppressionEntry.address.in_(lowered),
            or_(SuppressionEntry.tenant_id == tenant_id, SuppressionEntry.tenant_id.is_(None)),
        )
    )
    return set(rows)
