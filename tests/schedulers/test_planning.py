"""Campaign fan-out with send-time optimisation: scheduled at each subscriber's hour."""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from comms.campaigns import create_campaign, fire
from comms.models import Delivery, DeliveryState, SubscriberEngagement
from comms.sending import now_utc
from schedulers.fanout import fanout_batch
from schedulers.planning import plan_send_times
from schedulers.sendtime import pack_histogram
from tests.factories import SubscriberFactory, TenantFactory


def test_sto_campaign_schedules_each_subscriber_within_24_hours(session: Session) -> None:
    now = now_utc()
    tenant = TenantFactory()
    evening = SubscriberFactory(tenant_id=tenant.id, timezone="America/New_York")
    unknown = SubscriberFactory(tenant_id=tenant.id)
    ny_hour = (now.astimezone(zoneinfo.ZoneInfo("America/New_York")) + timedelta(hours=6)).hour
    hist = np.zeros(168)
    hist[[d * 24 + ny_hour for d in range(7)]] = 5.0
    session.add(SubscriberEngagement(subscriber_id=evening.id, tenant_id=tenant.id,
                                     histogram=pack_histogram(hist), timezone="America/New_York",
                                     evidence=35.0))  # fmt: skip
    campaign = create_campaign(session, tenant.id, name="sto", sender="a@example.com",
                               subject="s", text="t", send_time_optimisation=True)  # fmt: skip
    session.commit()
    fire(session, campaign.id, tenant.id)
    session.commit()
    report = fanout_batch(campaign.id, None, now=now, send_queue_depth=0)
    assert report.inserted == 2 and report.scheduled == 1
    rows = {d.subscriber_id: d for d in session.scalars(select(Delivery))}
    planned = rows[evening.id]
    assert planned.state is DeliveryState.SCHEDULED and planned.due_at is not None
    assert timedelta(hours=4) < planned.due_at - now <= timedelta(hours=24)
    assert rows[unknown.id].state is DeliveryState.PENDING  # no model: now


def test_damaged_models_are_sent_now() -> None:
    now = now_utc()
    good, short, empty = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    hist = np.zeros(168)
    hist[100] = 1.0
    rows = [
        (good, pack_histogram(hist), "UTC"),
        (short, pack_histogram([1.0, 2.0]), "UTC"),
        (empty, pack_histogram(np.zeros(168)), None),
    ]
    planned = plan_send_times(rows, now)
    assert set(planned) == {good}
    assert now <= planned[good] <= now + timedelta(hours=24)
