"""The Delivery state machine: every transition is a compare-and-set UPDATE.

A transition names the states it may start from; if the row is in none of
them the UPDATE matches nothing and the caller learns it lost the race (or the
work was already done), so repeated tasks and events change nothing.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from typing import Any, cast

from sqlalchemy import String, Table, Update, bindparam, func, insert, literal, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

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


def _compare_and_set(
    delivery_id: uuid.UUID,
    from_states: Iterable[DeliveryState],
    to_state: DeliveryState,
    values: dict[str, Any],
) -> Update:
    sources = frozenset(from_states)
    for source in sources:
        if to_state not in TRANSITIONS[source]:
            raise InvalidTransition(f"{source.value} → {to_state.value} is not a transition")
    return (
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state.in_(sources))
        .values(state=to_state, updated_at=func.now(), **values)
    )


def transition(
    session: Session,
    delivery_id: uuid.UUID,
    from_states: Iterable[DeliveryState],
    to_state: DeliveryState,
    **values: Any,
) -> bool:
    """Move a delivery to ``to_state`` if it is in one of ``from_states``; True if it moved."""
    result = session.execute(
        _compare_and_set(delivery_id, from_states, to_state, values).execution_options(
            synchronize_session=False
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def transition_with_event(
    session: Session,
    delivery_id: uuid.UUID,
    from_states: Iterable[DeliveryState],
    to_state: DeliveryState,
    event_type: str,
    data: dict[str, Any],
    **values: Any,
) -> bool:
    """:func:`transition`, and record ``event_type`` only if it moved: one statement.

    The UPDATE's RETURNING feeds the INSERT of the event, so the hot path of a
    send settles in a single round trip and the event exists exactly when the
    transition happened. ``values`` are plain values (bound as parameters), and
    the statement is built once per shape and reused.
    """
    statement = _transition_with_event_statement(
        frozenset(from_states), to_state, event_type, tuple(sorted(values))
    )
    params = {f"v_{name}": value for name, value in values.items()}
    params.update(delivery_id=delivery_id, event_data=data)
    return session.execute(statement, params).first() is not None


@functools.lru_cache(maxsize=64)
def _transition_with_event_statement(
    from_states: frozenset[DeliveryState],
    to_state: DeliveryState,
    event_type: str,
    names: tuple[str, ...],
) -> ReturningInsert[tuple[uuid.UUID | None]]:
    columns = Delivery.__table__.c
    update_ = _compare_and_set(
        delivery_id=bindparam("delivery_id", type_=columns.id.type),  # type: ignore[arg-type]
        from_states=from_states,
        to_state=to_state,
        values={name: bindparam(f"v_{name}", type_=columns[name].type) for name in names},
    )
    moved = update_.returning(Delivery.id, Delivery.tenant_id).cte("moved")
    # the Core table: an ORM insert given a parameter dict would turn into a bulk insert
    events = cast(Table, Event.__table__)
    return (
        insert(events)
        .from_select(
            ["id", "tenant_id", "delivery_id", "type", "data"],
            select(
                func.gen_random_uuid(),
                moved.c.tenant_id,
                moved.c.id,
                literal(event_type, String),
                bindparam("event_data", type_=events.c.data.type),
            ),
        )
        .returning(events.c.delivery_id)
    )


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
