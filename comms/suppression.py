"""The suppression list: addresses a tenant (or the whole platform) must not be sent to.

Policy for transactional mail (messages that are not part of a campaign): it
ignores ``unsubscribe`` entries (a receipt still reaches someone who left the
newsletter) but never ``hard_bounce``, ``complaint`` or ``manual`` ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import ColumnElement, delete, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from comms.models import SuppressionEntry, SuppressionReason

TRANSACTIONAL_IGNORES = frozenset({SuppressionReason.UNSUBSCRIBE})


def _applies(tenant_id: uuid.UUID) -> ColumnElement[bool]:
    return or_(SuppressionEntry.tenant_id == tenant_id, SuppressionEntry.tenant_id.is_(None))


def suppression_reason(
    session: Session, tenant_id: uuid.UUID, address: str, *, transactional: bool = False
) -> SuppressionReason | None:
    """Why ``address`` must not get this mail (tenant or platform-wide entry), or None."""
    reasons = set(
        session.scalars(
            select(SuppressionEntry.reason).where(
                SuppressionEntry.address == address.lower(), _applies(tenant_id)
            )
        )
    )
    return strongest_reason(reasons, transactional=transactional)


def strongest_reason(
    reasons: Iterable[str], *, transactional: bool = False
) -> SuppressionReason | None:
    """The reason that wins among an address's entries; transactional mail ignores some."""
    found = {SuppressionReason(r) for r in reasons}
    if transactional:
        found -= TRANSACTIONAL_IGNORES
    for reason in SuppressionReason:  # a stable order: the strongest reason first
        if reason in found:
            return reason
    return None


def suppress(
    session: Session,
    tenant_id: uuid.UUID | None,
    address: str,
    reason: SuppressionReason,
    detail: str | None = None,
) -> bool:
    """Add an entry (``tenant_id`` None: platform-wide); False if it was already there."""
    inserted = session.execute(
        insert(SuppressionEntry)
        .values(
            id=uuid.uuid4(), tenant_id=tenant_id, address=address.lower(), reason=reason,
            detail=detail,
        )
        .on_conflict_do_nothing(index_elements=["tenant_id", "address"])
        .returning(SuppressionEntry.id)
    ).first()  # fmt: skip
    return inserted is not None


def unsuppress(session: Session, tenant_id: uuid.UUID, address: str) -> bool:
    """Remove the tenant's own entry (platform-wide entries are the operator's)."""
    result = session.execute(
        delete(SuppressionEntry).where(
            SuppressionEntry.tenant_id == tenant_id, SuppressionEntry.address == address.lower()
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def list_entries(
    session: Session, tenant_id: uuid.UUID, *, after: str | None = None, limit: int = 100
) -> list[SuppressionEntry]:
    """The tenant's entries and platform-wide ones, by address, keyset-paginated."""
    query = select(SuppressionEntry).where(_applies(tenant_id))
    if after:
        query = query.where(SuppressionEntry.address > after.lower())
    return list(session.scalars(query.order_by(SuppressionEntry.address).limit(limit)))
