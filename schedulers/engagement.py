"""Engagement feedback: an open or click moves the subscriber's send-time model.

Runs as a task on the ``events`` queue; idempotent: an event is applied once
(marked in its data by compare-and-set). The stored model is a 168-bucket
hour-of-week histogram in the subscriber's local time, decayed by elapsed time
on every update; clicks count more than opens, machine opens not at all.
"""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import datetime

import numpy as np
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert

from comms.db import unit_of_work
from comms.models import Delivery, Event, Subscriber, SubscriberEngagement
from schedulers.sendtime import pack_histogram, unpack_histogram

HALF_LIFE_DAYS = 60.0
WEIGHTS = {"opened": 1.0, "clicked": 2.5}


def hour_of_week(at: datetime, tz: str | None) -> int:
    try:
        zone = zoneinfo.ZoneInfo(tz or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo("UTC")
    local = at.astimezone(zone)
    return local.weekday() * 24 + local.hour


def decayed(hist: np.ndarray, since: datetime, now: datetime) -> np.ndarray:
    days = max(0.0, (now - since).total_seconds() / 86400)
    return np.asarray(hist * 0.5 ** (days / HALF_LIFE_DAYS))


def apply_engagement(event_id: uuid.UUID) -> bool:
    """Fold one open/click event into its subscriber's model; False if nothing to do."""
    with unit_of_work() as session:
        claimed = session.execute(
            text(
                "UPDATE events SET data = data || '{\"model_applied\": true}'::jsonb "
                "WHERE id = :id AND NOT (data ? 'model_applied') RETURNING id"
            ),
            {"id": event_id},
        ).first()
        if claimed is None:
            return False
        event = session.get_one(Event, event_id)
        weight = WEIGHTS.get(event.type, 0.0)
        if event.data.get("machine") or not weight or event.delivery_id is None:
            return False
        subscriber = session.scalar(
            select(Subscriber)
            .join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.id == event.delivery_id)
        )
        if subscriber is None:
            return False
        model = session.get(SubscriberEngagement, subscriber.id, with_for_update=True)
        hist = np.zeros(168)
        evidence = 0.0
        if model is not None:
            hist = decayed(unpack_histogram(model.histogram), model.updated_at,
                           event.occurred_at)  # fmt: skip
            evidence = model.evidence
        hist[hour_of_week(event.occurred_at, subscriber.timezone)] += weight
        session.execute(
            insert(SubscriberEngagement)
            .values(
                subscriber_id=subscriber.id, tenant_id=subscriber.tenant_id,
                histogram=pack_histogram(hist), timezone=subscriber.timezone,
                evidence=evidence + weight, updated_at=event.occurred_at,
            )
            .on_conflict_do_update(
                index_elements=["subscriber_id"],
                set_={"histogram": pack_histogram(hist), "evidence": evidence + weight,
                      "timezone": subscriber.timezone, "updated_at": event.occurred_at},
            )
        )  # fmt: skip
        return True
