"""The sweep's claims: due scheduled rows, stuck sends, lost tasks."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from comms.models import Delivery, DeliveryState
from comms.sending import now_utc
from schedulers.sweeper import claim_due, recover_stuck, recover_unpublished
from tests.factories import DeliveryFactory

S = DeliveryState


def test_claims_only_due_scheduled_rows(session: Session) -> None:
    now = now_utc()
    due = DeliveryFactory(state=S.SCHEDULED, due_at=now - timedelta(seconds=1))
    soon = DeliveryFactory(state=S.SCHEDULED, due_at=now + timedelta(seconds=10))
    later = DeliveryFactory(state=S.SCHEDULED, due_at=now + timedelta(hours=3))
    session.commit()
    published = {p.delivery_id: p.countdown for p in claim_due(session, now)}
    session.commit()
    assert set(published) == {due.id, soon.id}
    assert published[due.id] == 0
    assert 9 < published[soon.id] <= 10
    session.refresh(later)
    assert later.state is S.SCHEDULED
    assert claim_due(session, now) == []  # claimed rows are pending now: nothing twice


def test_stuck_sends_return_to_pending_after_their_lease(session: Session) -> None:
    now = now_utc()
    expired = DeliveryFactory(state=S.SENDING, lease_until=now - timedelta(seconds=1))
    alive = DeliveryFactory(state=S.SENDING, lease_until=now + timedelta(minutes=5))
    session.commit()
    assert recover_stuck(session, now) == [expired.id]
    session.commit()
    session.refresh(alive)
    session.refresh(expired)
    assert expired.state is S.PENDING
    assert alive.state is S.SENDING


def test_lost_pending_rows_are_republished_once_per_interval(session: Session) -> None:
    now = now_utc()
    old = DeliveryFactory(state=S.PENDING)
    fresh = DeliveryFactory(state=S.PENDING)
    session.execute(
        update(Delivery).where(Delivery.id == old.id).values(updated_at=now - timedelta(minutes=10))
    )
    session.commit()
    assert recover_unpublished(session, now, timedelta(minutes=5)) == [old.id]
    session.commit()
    assert fresh.id not in recover_unpublished(session, now_utc(), timedelta(minutes=5))
    # its clock was reset: the next sweep does not publish it again
    assert recover_unpublished(session, now_utc(), timedelta(minutes=5)) == []
