"""Campaign fan-out: batches, suppression, firing twice sends once."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms.campaigns import CampaignError, create_campaign, fire, progress
from comms.models import Campaign, CampaignStatus, Delivery, DeliveryState, SuppressionReason
from schedulers.fanout import fanout_batch
from tests.factories import SubscriberFactory, SuppressionEntryFactory, TenantFactory


def test_fanout_in_batches_with_suppression_and_no_duplicates(session: Session) -> None:
    tenant = TenantFactory()
    subscribers = [SubscriberFactory(tenant_id=tenant.id, tags=["news"]) for _ in range(25)]
    SubscriberFactory(tenant_id=tenant.id, tags=["other"])  # not in the audience
    SuppressionEntryFactory(
        tenant_id=tenant.id, address=subscribers[0].email, reason=SuppressionReason.UNSUBSCRIBE
    )
    campaign = create_campaign(
        session, tenant.id, name="n", sender="a@example.com", subject="s", text="t", tags=["news"]
    )
    session.commit()
    fire(session, campaign.id, tenant.id)
    session.commit()

    cursor: str | None = None
    batches = 0
    while True:
        report = fanout_batch(campaign.id, cursor, batch_size=10)
        batches += 1
        cursor = report.next_cursor
        if cursor is None:
            break
    assert batches == 3
    # a redelivered first batch inserts nothing new
    session.execute(
        Campaign.__table__.update().values(status=CampaignStatus.FIRING)  # type: ignore[attr-defined]
    )
    session.commit()
    assert fanout_batch(campaign.id, None, batch_size=10).inserted == 0

    counts = progress(session, campaign.id).counts
    assert counts == {"pending": 24, "suppressed": 1}
    total = session.scalar(select(func.count()).select_from(Delivery))
    assert total == 25
    suppressed = session.scalar(
        select(Delivery.recipient).where(Delivery.state == DeliveryState.SUPPRESSED)
    )
    assert suppressed == subscribers[0].email


def test_a_campaign_fires_once(session: Session) -> None:
    tenant = TenantFactory()
    campaign = create_campaign(
        session, tenant.id, name="n", sender="a@example.com", subject="s", text="t"
    )
    session.commit()
    fire(session, campaign.id, tenant.id)
    session.commit()
    with pytest.raises(CampaignError, match="only a draft can be fired"):
        fire(session, campaign.id, tenant.id)
