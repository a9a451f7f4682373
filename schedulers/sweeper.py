"""The sweep: publish scheduled deliveries that are due, and recover lost or stuck ones.

Every claim is ``FOR UPDATE SKIP LOCKED`` plus a compare-and-set, so any number
of sweepers may run at once; publishing twice is harmless because the deliver
task claims by compare-and-set.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from comms.models import Campaign, CampaignStatus, Delivery, DeliveryState

S = DeliveryState
#: Scheduled rows due within this horizon are published now with a countdown.
DUE_HORIZON = timedelta(seconds=30)


@dataclass(frozen=True)
class Publication:
    delivery_id: uuid.UUID
    countdown: float


def claim_due(session: Session, now: datetime, limit: int = 5000) -> list[Publication]:
    """Move scheduled deliveries due before ``now + horizon`` to pending; return what to publish."""
    held = (
        select(Campaign.id)
        .where(
            Campaign.id == Delivery.campaign_id,
            Campaign.status.in_((CampaignStatus.PAUSED, CampaignStatus.CANCELLED)),
        )
        .exists()
    )
    due = (
        select(Delivery.id)
        .where(Delivery.state == S.SCHEDULED, Delivery.due_at <= now + DUE_HORIZON, ~held)
        .order_by(Delivery.due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = session.execute(
        update(Delivery)
        .where(Delivery.id.in_(due.scalar_subquery()), Delivery.state == S.SCHEDULED)
        .values(state=S.PENDING, updated_at=func.now())
        .returning(Delivery.id, Delivery.due_at)
        .execution_options(synchronize_session=False)
    ).all()
    return [
        Publication(row.id, max(0.0, (row.due_at - now).total_seconds()) if row.due_at else 0.0)
        for row in rows
    ]


def recover_stuck(session: Session, now: datetime, limit: int = 5000) -> list[uuid.UUID]:
    """Deliveries whose worker died mid-send (lease expired) go back to pending."""
    stuck = (
        select(Delivery.id)
        .where(Delivery.state == S.SENDING, Delivery.lease_until < now)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(
        session.scalars(
            update(Delivery)
            .where(Delivery.id.in_(stuck.scalar_subquery()), Delivery.state == S.SENDING)
            .values(state=S.PENDING, lease_until=None, updated_at=func.now())
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
    )


def recover_unpublished(
    session: Session, now: datetime, older_than: timedelta, limit: int = 5000
) -> list[uuid.UUID]:
    """Pending deliveries nobody claimed for ``older_than``: their task was lost.

    Call this only when the send queue is empty, so rows merely waiting their
    turn in a long queue are not published twice.
    """
    lost = (
        select(Delivery.id)
        .where(Delivery.state == S.PENDING, Delivery.updated_at < now - older_than)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(
        session.scalars(
            update(Delivery)
            .where(Delivery.id.in_(lost.scalar_subquery()), Delivery.state == S.PENDING)
            .values(updated_at=func.now())
            .returning(Delivery.id)
            .execution_options(synchronize_session=False)
        )
    )


@dataclass(frozen=True)
class SweepReport:
    due: int
    stuck: int
    lost: int
    campaigns_done: int
    replies_forwarded: int = 0


def sweep(now: datetime, *, send_queue_depth: int | None = None) -> SweepReport:
    """One pass of the sweep; publishes after its transaction commits."""
    from comms import contract
    from comms.campaigns import settle_finished_campaigns
    from comms.db import after_commit, unit_of_work
    from comms.dispatch import publish, publish_many
    from comms.inbound.replies import forward_due
    from comms.settings import get_settings

    settings = get_settings()
    room = 5000
    if send_queue_depth is not None:
        # backpressure: top the send queue up to its bound, never beyond
        room = max(0, min(room, settings.max_queue_depth - send_queue_depth))
    with unit_of_work() as session:
        due = claim_due(session, now, limit=room) if room else []
        stuck = recover_stuck(session, now)
        lost: list[uuid.UUID] = []
        if send_queue_depth == 0:
            lost = recover_unpublished(
                session, now, timedelta(seconds=settings.republish_after_seconds)
            )
        done = settle_finished_campaigns(session)
        replies = forward_due(session, now)
        immediate = [str(i) for i in stuck + lost] + [
            str(p.delivery_id) for p in due if p.countdown <= 0
        ]
        later = [p for p in due if p.countdown > 0]

        def _publish() -> None:
            publish_many(contract.DELIVER, ([i] for i in immediate))
            for p in later:
                publish(contract.DELIVER, [str(p.delivery_id)], countdown=p.countdown)

            publish_many(contract.FORWARD_REPLY, ([str(r)] for r in replies))

        after_commit(session, _publish)
    return SweepReport(
        due=len(due), stuck=len(stuck), lost=len(lost), campaigns_done=done,
        replies_forwarded=len(replies),
    )  # fmt: skip
