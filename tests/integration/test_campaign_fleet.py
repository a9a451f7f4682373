"""Campaigns through real worker processes: a kill half way, a refire, a Redis restart."""

from __future__ import annotations

import contextlib
import threading
import uuid
from datetime import timedelta

import pytest
import redis
from sqlalchemy import func, insert, select

from comms.campaigns import create_campaign, fire
from comms.db import unit_of_work
from comms.devsink import SinkHandler, SmtpSink
from comms.devstack import DevStack, StackInfo
from comms.models import Delivery, DeliveryState, Message, Subscriber
from comms.provider_configs import create_provider_config
from comms.sending import now_utc
from comms.tenants import create_tenant
from tests.conftest import TEST_DATA_DIR
from tests.integration.conftest import Fleet, wait_until

pytestmark = pytest.mark.integration


def _tenant(port: int, subscribers: int) -> uuid.UUID:
    with unit_of_work() as session:
        tenant, _ = create_tenant(session, "acme")
        create_provider_config(
            session, kind="smtp", name="sink", tenant_id=tenant.id,
            settings={"host": "127.0.0.1", "port": port},
        )  # fmt: skip
        if subscribers:
            session.execute(
                insert(Subscriber),
                [
                    {"id": uuid.uuid4(), "tenant_id": tenant.id, "email": f"s{n:05d}@example.org",
                     "fields": {}, "tags": []}
                    for n in range(subscribers)
                ],
            )  # fmt: skip
        return tenant.id


def _count(state: DeliveryState) -> int:
    with unit_of_work() as session:
        return int(
            session.scalar(
                select(func.count()).select_from(Delivery).where(Delivery.state == state)
            )
            or 0
        )


def test_campaign_of_2000_survives_a_killed_worker_and_fires_once(fleet: Fleet) -> None:
    total = 2000
    blocked, release = threading.Event(), threading.Event()

    def gate(address: str) -> str | None:
        if handler.count() >= total // 2 and not blocked.is_set():
            blocked.set()
            release.wait(30)
        return None

    handler = SinkHandler(on_rcpt=gate)
    with SmtpSink(handler) as sink:
        tenant_id = _tenant(sink.port, total)
        fleet.beat()
        doomed = fleet.worker("doomed", concurrency=1)
        with unit_of_work() as session:
            campaign = create_campaign(
                session, tenant_id, name="big", sender="news@example.com", subject="s", text="t"
            )
            campaign_id = campaign.id
        with unit_of_work() as session:
            fire(session, campaign_id, tenant_id)
        wait_until(blocked.is_set, 120, "the half-way send", fleet.logs)
        Fleet.kill(doomed)
        release.set()
        fleet.worker("successor", concurrency=2)
        wait_until(lambda: _count(DeliveryState.SENT) == total, 180, "all 2000 sends", fleet.logs)
        got = handler.recipients()
        assert len(got) == total, f"{len(got) - len(set(got))} recipients got it twice"
        assert len(set(got)) == total

        # firing the same campaign again sends nothing
        from comms.campaigns import CampaignError

        with pytest.raises(CampaignError), unit_of_work() as session:
            fire(session, campaign_id, tenant_id)
        from schedulers.fanout import fanout_batch

        assert fanout_batch(campaign_id, None).inserted == 0
        assert handler.count() == total


def test_scheduled_sends_survive_a_redis_restart(fleet: Fleet, stack: StackInfo) -> None:
    handler = SinkHandler()
    with SmtpSink(handler) as sink:
        tenant_id = _tenant(sink.port, 0)
        due = now_utc() + timedelta(seconds=4)
        with unit_of_work() as session:
            message_id = uuid.uuid4()
            session.execute(
                insert(Message).values(
                    id=message_id, tenant_id=tenant_id, channel="email", source="test",
                    content={"from": "a@example.com", "subject": "later", "text": "t"},
                )
            )  # fmt: skip
            session.execute(
                insert(Delivery),
                [
                    {"id": uuid.uuid4(), "tenant_id": tenant_id, "message_id": message_id,
                     "recipient": f"later{i}@example.org", "state": DeliveryState.SCHEDULED,
                     "due_at": due}
                    for i in range(20)
                ],
            )  # fmt: skip
        # Redis loses everything (no persistence) while the rows wait in PostgreSQL
        client = redis.Redis.from_url(stack.redis_url)
        with contextlib.suppress(redis.ConnectionError):  # it hangs up as it goes down
            client.shutdown(nosave=True)
        client.close()
        DevStack(TEST_DATA_DIR).up()  # starts Redis again on the same port, empty
        fleet.beat()
        fleet.worker("w1")
        wait_until(lambda: handler.count() == 20, 60, "the scheduled sends", fleet.logs)
        assert sorted(handler.recipients()) == sorted(f"later{i}@example.org" for i in range(20))
        assert _count(DeliveryState.SENT) == 20
