"""Campaign fan-out: one keyset-paginated batch of recipients per task.

Each batch inserts its Delivery rows in bulk (unique per campaign and
subscriber, so a repeated batch inserts nothing), marks suppressed subscribers
as suppressed, decides *when* each recipient gets the mail (now, or at the
subscriber's best hour when send-time optimisation is on), publishes what is
due now after commit and stores the rest as ``scheduled`` for the sweeper.
The cursor is kept on the campaign, so pause/resume continue where they stopped.

Backpressure: when the ``send`` queue already holds ``max_queue_depth``
messages, rows due now are stored as ``scheduled`` (due now) instead of being
published; the sweeper tops the queue up as it drains. The broker never holds
more than about one campaign batch beyond the bound, however large the campaign.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.dialects.postgresql import insert

from comms import contract
from comms.campaigns import audience_query
from comms.db import after_commit, unit_of_work
from comms.dispatch import publish, publish_many, queue_depth
from comms.models import (
    Campaign,
    CampaignStatus,
    Delivery,
    DeliveryState,
    Subscriber,
    SubscriberEngagement,
)
from comms.settings import get_settings
from comms.suppression import suppressed_addresses
from schedulers.planning import plan_send_times

BATCH_SIZE = 1000
#: sends due within this are published now rather than scheduled
PUBLISH_NOW_WITHIN = timedelta(seconds=30)


@dataclass(frozen=True)
class FanoutReport:
    inserted: int
    suppressed: int
    scheduled: int
    next_cursor: str | None


def fanout_batch(
    campaign_id: uuid.UUID,
    cursor: str | None,
    batch_size: int = BATCH_SIZE,
    now: datetime | None = None,
    send_queue_depth: int | None = None,
) -> FanoutReport:
    from comms.sending import now_utc

    now = now or now_utc()
    with unit_of_work() as session:
        campaign = session.get(Campaign, campaign_id, with_for_update=True)
        if campaign is None or campaign.status is not CampaignStatus.FIRING:
            return FanoutReport(0, 0, 0, None)  # paused or cancelled: resume publishes again
        query = audience_query(campaign).order_by(Subscriber.id).limit(batch_size)
        if cursor:
            query = query.where(Subscriber.id > uuid.UUID(cursor))
        batch = session.execute(query).all()
        suppressed = suppressed_addresses(session, campaign.tenant_id, [r.email for r in batch])

        due: dict[uuid.UUID, datetime] = {}
        if campaign.send_time_optimisation and batch:
            models = session.execute(
                select(
                    SubscriberEngagement.subscriber_id,
                    SubscriberEngagement.histogram,
                    SubscriberEngagement.timezone,
                ).where(SubscriberEngagement.subscriber_id.in_([r.id for r in batch]))
            ).all()
            due = plan_send_times(models, now)
        depth = send_queue_depth if send_queue_depth is not None else queue_depth("send")
        queue_full = depth >= get_settings().max_queue_depth

        rows: list[dict[str, Any]] = []
        for r in batch:
            row: dict[str, Any] = {
                "id": uuid.uuid4(),
                "tenant_id": campaign.tenant_id,
                "message_id": campaign.message_id,
                "recipient": r.email,
                "campaign_id": campaign.id,
                "subscriber_id": r.id,
                "state": DeliveryState.PENDING,
                "due_at": None,  # every row names the same columns (one multi-row INSERT)
                "last_error": None,
            }
            at = due.get(r.id, now)
            if r.email.lower() in suppressed:
                row.update(state=DeliveryState.SUPPRESSED, last_error="suppressed")
            elif at - now > PUBLISH_NOW_WITHIN or queue_full:
                row.update(state=DeliveryState.SCHEDULED, due_at=at)
            rows.append(row)

        inserted: Sequence[Row[uuid.UUID, DeliveryState]] = []
        if rows:
            inserted = session.execute(
                insert(Delivery)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["campaign_id", "subscriber_id"])
                .returning(Delivery.id, Delivery.state)
            ).all()
        pending = [str(r.id) for r in inserted if r.state is DeliveryState.PENDING]

        def _publish_pending() -> None:
            publish_many(contract.DELIVER, ([i] for i in pending))

        after_commit(session, _publish_pending)
        next_cursor = str(batch[-1].id) if len(batch) == batch_size else None
        values: dict[str, Any] = {"fanout_cursor": str(batch[-1].id) if batch else cursor}
        if next_cursor:
            after_commit(session, lambda: publish(contract.FANOUT, [str(campaign_id), next_cursor]))
        else:
            values.update(fanout_done=True, status=CampaignStatus.SENDING)
        session.execute(
            update(Campaign)
            .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.FIRING)
            .values(**values)
        )
        states = [r.state for r in inserted]
        return FanoutReport(
            inserted=len(inserted),
            suppressed=states.count(DeliveryState.SUPPRESSED),
            scheduled=states.count(DeliveryState.SCHEDULED),
            next_cursor=next_cursor,
        )
