"""Pause, resume and cancel against real fan-out, sweep and deliver code."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms.campaigns import CampaignError, cancel, create_campaign, fire, pause, progress, resume
from comms.devsink import SinkHandler, SmtpSink
from comms.models import Campaign, CampaignStatus, Delivery, DeliveryState
from comms.provider_configs import create_provider_config
from comms.providers.smtp import close_all_connections
from comms.sending import Outcome, deliver, now_utc
from schedulers.fanout import fanout_batch
from schedulers.sweeper import claim_due
from tests.factories import SubscriberFactory, TenantFactory


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink(SinkHandler()) as s:
        yield s
        close_all_connections()


def _campaign(session: Session, port: int, n: int = 30) -> tuple[uuid.UUID, uuid.UUID]:
    tenant = TenantFactory()
    for _ in range(n):
        SubscriberFactory(tenant_id=tenant.id)
    create_provider_config(
        session, kind="smtp", name="sink", tenant_id=tenant.id,
        settings={"host": "127.0.0.1", "port": port},
    )  # fmt: skip
    campaign = create_campaign(
        session, tenant.id, name="n", sender="a@example.com",
        subject="Hi {{ first_name }}", text="{{ ai_intro }} / {{ email }}",
        fallback_intro="Welcome back",
    )  # fmt: skip
    session.commit()
    return campaign.id, tenant.id


def _states(session: Session, cid: uuid.UUID) -> dict[str, int]:
    session.expire_all()
    return progress(session, cid).counts


def test_pause_keeps_the_cursor_and_resume_finishes_the_fanout(
    session: Session, sink: SmtpSink
) -> None:
    cid, tid = _campaign(session, sink.port)
    fire(session, cid, tid)
    session.commit()
    first = fanout_batch(cid, None, batch_size=10, send_queue_depth=0)
    pause(session, cid, tid)
    session.commit()
    assert fanout_batch(cid, first.next_cursor, batch_size=10, send_queue_depth=0).inserted == 0
    # a send that was already in the queue is held back, not lost
    some = session.scalars(select(Delivery.id).where(Delivery.campaign_id == cid)).first()
    assert some is not None
    assert deliver(some).outcome is Outcome.DEFERRED
    session.expire_all()
    assert session.get_one(Delivery, some).state is DeliveryState.SCHEDULED
    assert claim_due(session, now_utc()) == []  # the sweeper leaves paused campaigns alone
    session.rollback()

    resume(session, cid, tid)
    session.commit()
    cursor = session.get_one(Campaign, cid).fanout_cursor
    assert cursor == first.next_cursor
    while cursor:
        cursor = fanout_batch(cid, cursor, batch_size=10, send_queue_depth=0).next_cursor
    assert sum(_states(session, cid).values()) == 30
    assert [p.delivery_id for p in claim_due(session, now_utc())] == [some]
    session.commit()
    assert deliver(some).outcome is Outcome.SENT
    mail = sink.handler.received[0]
    assert "Welcome back" in mail.raw.decode()
    assert mail.subject == "Hi Ann"


def test_cancel_marks_everything_unsent_cancelled(session: Session, sink: SmtpSink) -> None:
    cid, tid = _campaign(session, sink.port, n=12)
    fire(session, cid, tid)
    session.commit()
    fanout_batch(cid, None, batch_size=100, send_queue_depth=0)
    ids = session.scalars(select(Delivery.id).where(Delivery.campaign_id == cid)).all()
    assert deliver(ids[0]).outcome is Outcome.SENT
    assert cancel(session, cid, tid) == 11
    session.commit()
    assert _states(session, cid) == {"sent": 1, "cancelled": 11}
    assert deliver(ids[1]).outcome is Outcome.SKIPPED
    assert sink.handler.count() == 1
    with pytest.raises(CampaignError, match="only paused can be resumed"):
        resume(session, cid, tid)


def test_backpressure_stores_sends_when_the_queue_is_full(session: Session, sink: SmtpSink) -> None:
    cid, tid = _campaign(session, sink.port, n=5)
    fire(session, cid, tid)
    session.commit()
    report = fanout_batch(cid, None, batch_size=100, send_queue_depth=10**9)
    assert report.scheduled == 5
    assert _states(session, cid) == {"scheduled": 5}
    total = session.scalar(
        select(func.count()).select_from(Delivery).where(Delivery.due_at <= now_utc())
    )
    assert total == 5  # due now: the sweeper publishes them as the queue drains
    assert session.get_one(Campaign, cid).status is CampaignStatus.SENDING
