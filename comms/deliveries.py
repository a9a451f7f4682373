"""The Delivery state machine: every transition is a compare-and-set UPDATE.

A transition names the states it may start from; if the row is in none of
them the UPDATE matches nothing and the caller learns it lost the race (or the
work was already done), so repeated tasks and events change nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.orm import Session

from comms.models import Delivery, DeliveryState, Event

S = DeliveryState

#: Which states each state may move to.
TRANSITIONS: dict[DeliveryState, frozenset[DeliveryState]] = {
    S.PENDING: frozenset({S.SCHEDULED, S.SENDING, S.SUPPRESSED, S.CANCELLED, S.FAILED}),
    S.SCHEDULED: frozenset({S.PENDING, S.SENDING, S.SUPPRESSED, S.CANCELLED}),
    S.SENDING: frozenset({S.SENT, S.FAILED, S.PENDING, S.SCHEDULED, S.SUPPRESSED, S.CANCELLED}),
    S.SENT: frozenset({S.DELIVERED, S.BOUNCED, S.COMPLAINED, S.FAILED}),
    S.DELIVERED: frozenset({S.BOUNCED, S.COMPLAINED}),
    S.BOUNCED: frozenset({S.COMPLAINED}),
    S.FAILED: frozenset(),
    S.SUPPRESSED: frozenset(),
    S.CANCELLED: frozenset(),
    S.COMPLAINED: frozenset(),
}

TERMINAL = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt) | {
    S.SENT,
    S.DELIVERED,
    S.BOUNCED,
}


class InvalidTransition(ValueError):
    pass


def transition(
    session: Session,
    delivery_id: uuid.UUID,
    from_states: Iterable[DeliveryState],
    to_state: DeliveryState,
    **values: Any,
) -> bool:
    """Move a delivery to ``to_state`` if it is in one of ``from_states``; True if it moved."""
    sources = frozenset(from_states)
    for source in sources:
        if to_state not in TRANSITIONS[source]:
            raise InvalidTransition(f"{source.value} → {to_state.value} is not a transition")
    result = session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state.in_(sources))
        .values(state=to_state, updated_at=func.now(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_event(
    session: Session,
    tenant_id: uuid.UUID,
    delivery_id: uuid.UUID,
    type_: str,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        Event(id=uuid.uuid4(), tenant_id=tenant_id, delivery_id=delivery_id, type=type_,
              data=data or {})
    )  # fmt: skip
