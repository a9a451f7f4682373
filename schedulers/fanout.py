"""Campaign fan-out: one keyset-paginated batch of recipients per task.

Each batch inserts its Delivery rows in bulk (unique per campaign and
subscriber, so a repeated batch inserts nothing), marks suppressed subscribers
as suppressed, publishes the pending ones after commit, and hands the cursor to
the next batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Row, update
from sqlalchemy.dialects.postgresql import insert

from comms import contract
from comms.campaigns import audience_query
from comms.db import after_commit, unit_of_work
from comms.dispatch import publish, publish_many
from comms.models import Campaign, CampaignStatus, Delivery, DeliveryState, Subscriber
from comms.suppression import suppressed_addresses

BATCH_SIZE = 1000


@dataclass(frozen=True)
class FanoutReport:
    inserted: int
    suppressed: int
    next_cursor: str | None


def fanout_batch(
    campaign_id: uuid.UUID, cursor: str | None, batch_size: int = BATCH_SIZE
) -> FanoutReport:
    with unit_of_work() as session:
        campaign = session.get(Campaign, campaign_id, with_for_update=True)
        if campaign is None or campaign.status is not CampaignStatus.FIRING:
            return FanoutReport(0, 0, None)
        query = audience_query(campaign).order_by(Subscriber.id).limit(batch_size)
        if cursor:
            query = query.where(Subscriber.id > uuid.UUID(cursor))
        batch = session.execute(query).all()
        suppressed = suppressed_addresses(session, campaign.tenant_id, [r.email for r in batch])
        rows = [
            {
                "id": uuid.uuid4(),
                "tenant_id": campaign.tenant_id,
                "message_id": campaign.message_id,
                "recipient": r.email,
                "state": (
                    DeliveryState.SUPPRESSED
                    if r.email.lower() in suppressed
                    else DeliveryState.PENDING
                ),
                "last_error": "suppressed" if r.email.lower() in suppressed else None,
                "campaign_id": campaign.id,
                "subscriber_id": r.id,
            }
            for r in batch
        ]
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
        if next_cursor:
            after_commit(session, lambda: publish(contract.FANOUT, [str(campaign_id), next_cursor]))
        else:
            session.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.FIRING)
                .values(status=CampaignStatus.SENDING)
            )
        return FanoutReport(len(inserted), len(inserted) - len(pending), next_cursor)
