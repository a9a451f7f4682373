"""Campaign fan-out: keyset-paginated batches of recipients, pipelined across workers.

A batch task first reads its page of subscribers and immediately hands the
next page's cursor to another task, so every fan-out worker is busy at once;
then it writes its Delivery rows in one ``INSERT … SELECT unnest(…)``
(unique per campaign and subscriber, so a repeated batch inserts nothing),
marks suppressed subscribers as suppressed, decides *when* each recipient gets
the mail (now, or at the subscriber's best hour when send-time optimisation
is on), publishes what is due now after commit and stores the rest as
``scheduled`` for the sweeper. The campaign counts finished batches; the
fan-out is done when all of them are.

Backpressure: when the ``send`` queue already holds ``max_queue_depth``
messages, rows due now are stored as ``scheduled`` (due now) instead of being
published; the sweeper tops the queue up as it drains. The broker holds no
more than about one batch beyond the bound, however large the campaign.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, exists, func, null, or_, text, update
from sqlalchemy.orm import Session

from comms import contract
from comms.campaigns import audience_query
from comms.db import after_commit, unit_of_work
from comms.dispatch import publish, publish_many, queue_depth
from comms.models import (
    Campaign,
    CampaignStatus,
    Subscriber,
    SubscriberEngagement,
    SuppressionEntry,
)
from comms.settings import get_settings
from schedulers.planning import plan_send_times

BATCH_SIZE = 1000
#: sends due within this are published now rather than scheduled
PUBLISH_NOW_WITHIN = timedelta(seconds=30)

_INSERT = text("""
INSERT INTO deliveries (id, tenant_id, message_id, recipient, campaign_id, subscriber_id,
                        state, due_at, last_error, attempts, failover_index,
                        created_at, updated_at)
SELECT gen_random_uuid(), :tenant_id, :message_id, d.recipient, :campaign_id, d.subscriber_id,
       d.state::delivery_state, d.due_at, d.last_error, 0, 0, now(), now()
FROM unnest(CAST(:recipients AS text[]), CAST(:subscribers AS uuid[]),
            CAST(:states AS text[]), CAST(:due AS timestamptz[]), CAST(:errors AS text[]))
     AS d(recipient, subscriber_id, state, due_at, last_error)
ON CONFLICT (campaign_id, subscriber_id) DO NOTHING
RETURNING id, state::text
""")


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
    seq: int = 0,
) -> FanoutReport:
    from comms.sending import now_utc

    now = now or now_utc()
    with unit_of_work() as session:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None or campaign.status is not CampaignStatus.FIRING:
            return FanoutReport(0, 0, 0, None)  # paused or cancelled: resume publishes again
        batch = session.execute(_page_query(campaign, cursor, batch_size)).all()
        next_cursor = str(batch[-1].id) if len(batch) == batch_size else None
        # hand the next page to another worker before doing this one (pipelining)
        if next_cursor:
            publish(contract.FANOUT, [str(campaign_id), next_cursor, seq + 1])
        tenant_id, message_id, sto = campaign.tenant_id, campaign.message_id, (
            campaign.send_time_optimisation
        )  # fmt: skip

    due: dict[uuid.UUID, datetime] = {}
    if sto and batch:
        due = plan_send_times(
            ((r.id, r.histogram, r.timezone) for r in batch if r.histogram is not None), now
        )
    with unit_of_work() as session:
        depth = send_queue_depth if send_queue_depth is not None else queue_depth("send")
        queue_full = depth >= get_settings().max_queue_depth

        states: list[str] = []
        due_at: list[datetime | None] = []
        errors: list[str | None] = []
        for r in batch:
            at = due.get(r.id, now)
            if r.suppressed:
                state, when, error = "suppressed", None, "suppressed"
            elif at - now > PUBLISH_NOW_WITHIN or queue_full:
                state, when, error = "scheduled", at, None
            else:
                state, when, error = "pending", None, None
            states.append(state)
            due_at.append(when)
            errors.append(error)
        inserted = (
            session.execute(
                _INSERT,
                {
                    "tenant_id": tenant_id, "message_id": message_id, "campaign_id": campaign_id,
                    "recipients": [r.email for r in batch],
                    "subscribers": [r.id for r in batch], "states": states, "due": due_at,
                    "errors": errors,
                },
            ).all()
            if batch
            else []
        )  # fmt: skip
        pending = [str(row.id) for row in inserted if row.state == "pending"]

        def _publish_pending() -> None:
            publish_many(contract.DELIVER, ([i] for i in pending))

        after_commit(session, _publish_pending)
        _count_batch(
            session, campaign_id, cursor=next_cursor, total=None if next_cursor else seq + 1
        )
        states_in = [row.state for row in inserted]
        return FanoutReport(
            inserted=len(inserted),
            suppressed=states_in.count("suppressed"),
            scheduled=states_in.count("scheduled"),
            next_cursor=next_cursor,
        )


def _page_query(campaign: Campaign, cursor: str | None, batch_size: int) -> Select[Any]:
    """One page of the audience in subscriber-id order, in a single statement.

    Each row carries whether the address is suppressed (for this tenant or
    platform-wide) and, with send-time optimisation, the subscriber's model.
    """
    suppressed = (
        exists()
        .where(
            SuppressionEntry.address == func.lower(Subscriber.email),
            or_(
                SuppressionEntry.tenant_id == campaign.tenant_id,
                SuppressionEntry.tenant_id.is_(None),
            ),
        )
        .label("suppressed")
    )
    query = audience_query(campaign).add_columns(suppressed)
    if campaign.send_time_optimisation:
        query = query.outerjoin(
            SubscriberEngagement, SubscriberEngagement.subscriber_id == Subscriber.id
        ).add_columns(SubscriberEngagement.histogram, SubscriberEngagement.timezone)
    else:
        query = query.add_columns(null().label("histogram"), null().label("timezone"))
    if cursor:
        query = query.where(Subscriber.id > uuid.UUID(cursor))
    return query.order_by(Subscriber.id).limit(batch_size)


def _count_batch(
    session: Session, campaign_id: uuid.UUID, cursor: str | None, total: int | None
) -> None:
    """One more batch finished; the fan-out is done when every batch has."""
    values: dict[str, object] = {"fanout_completed": Campaign.fanout_completed + 1}
    if cursor:
        values["fanout_cursor"] = cursor
    if total is not None:
        values["fanout_batches"] = total
    session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == CampaignStatus.FIRING)
        .values(**values)
    )
    session.execute(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.status == CampaignStatus.FIRING,
            Campaign.fanout_batches.is_not(None),
            Campaign.fanout_completed >= Campaign.fanout_batches,
        )
        .values(fanout_done=True, status=CampaignStatus.SENDING)
    )
