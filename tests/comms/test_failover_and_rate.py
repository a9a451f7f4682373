"""Failover between a tenant's providers, and the fleet-wide rate limit."""

from __future__ import annotations

import itertools
import time
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from comms.commands import EmailContent
from comms.db import unit_of_work
from comms.devsink import SinkHandler, SmtpSink
from comms.messaging import accept
from comms.models import Delivery, DeliveryState, Event
from comms.provider_configs import create_provider_config
from comms.providers.smtp import close_all_connections
from comms.ratelimit import RateLimiter
from comms.sending import Outcome, deliver
from comms.tenants import create_tenant


def _message(session: Session, tenant_id: uuid.UUID, n: int = 1) -> list[uuid.UUID]:
    content = EmailContent.model_validate(
        {"from": "a@example.com", "to": [f"r{i}@example.org" for i in range(n)],
         "subject": "s", "text": "t"}
    )  # fmt: skip
    ids = accept(session, tenant_id, content).delivery_ids
    session.commit()
    return ids


def _row(delivery_id: uuid.UUID) -> Delivery:
    with unit_of_work() as s:
        return s.get_one(Delivery, delivery_id)


def test_transient_failure_moves_to_the_next_provider_now(session: Session) -> None:
    broken = SinkHandler(on_rcpt=lambda _: "451 4.3.0 unavailable")
    healthy = SinkHandler()
    with SmtpSink(broken) as first, SmtpSink(healthy) as second:
        tenant, _ = create_tenant(session, "acme")
        primary = create_provider_config(
            session, kind="smtp", name="primary", tenant_id=tenant.id, priority=0,
            settings={"host": "127.0.0.1", "port": first.port},
        )  # fmt: skip
        backup = create_provider_config(
            session, kind="smtp", name="backup", tenant_id=tenant.id, priority=1,
            settings={"host": "127.0.0.1", "port": second.port},
        )  # fmt: skip
        (delivery_id,) = _message(session, tenant.id)
        retry = deliver(delivery_id)
        assert retry.outcome is Outcome.RETRY
        assert retry.retry_in == 0  # no back-off when another provider is waiting
        assert _row(delivery_id).provider_config_id == primary.id
        assert deliver(delivery_id).outcome is Outcome.SENT
        close_all_connections()
    row = _row(delivery_id)
    assert row.provider_config_id == backup.id
    assert row.attempts == 2 and row.failover_index == 1
    assert healthy.count() == 1 and broken.count() == 0
    with unit_of_work() as s:
        types = s.scalars(select(Event.type).where(Event.delivery_id == delivery_id)).all()
    assert sorted(types) == ["failover", "sent"]


def test_no_token_defers_without_counting_an_attempt(
    session: Session,
) -> None:
    handler = SinkHandler()
    with SmtpSink(handler) as sink:
        tenant, _ = create_tenant(session, "acme")
        create_provider_config(
            session, kind="smtp", name="slow", tenant_id=tenant.id,
            settings={"host": "127.0.0.1", "port": sink.port, "rate": 1, "burst": 1},
        )  # fmt: skip
        first, second = _message(session, tenant.id, n=2)
        assert deliver(first).outcome is Outcome.SENT
        deferred = deliver(second)
        assert deferred.outcome is Outcome.DEFERRED
        assert deferred.retry_in is not None and 0 < deferred.retry_in <= 1.0
        row = _row(second)
        assert row.state is DeliveryState.PENDING and row.attempts == 0
        # the re-published task comes back after its countdown; poll like the broker would
        deadline = time.monotonic() + 5
        while deliver(second).outcome is Outcome.DEFERRED:
            assert time.monotonic() < deadline, "no token within 5 s at 1/s"
            time.sleep(0.05)
        assert _row(second).state is DeliveryState.SENT
        close_all_connections()
    assert handler.count() == 2


def test_throttling_halves_the_rate_and_it_recovers() -> None:
    limiter = RateLimiter()
    config = uuid.uuid4()
    assert limiter.slow_down(config) == 0.5
    assert limiter.slow_down(config) == 0.25
    grants = [limiter.acquire(config, rate=100, burst=1) for _ in range(3)]
    # at a quarter of 100/s, retry slots are handed out ~40 ms apart, not 10 ms
    assert grants[2].wait > 0.06


def test_a_burst_is_served_then_retry_slots_are_spaced_at_the_rate() -> None:
    limiter = RateLimiter()
    config = uuid.uuid4()
    waits = [limiter.acquire(config, rate=10, burst=3).wait for _ in range(8)]
    assert waits[:3] == [0, 0, 0]
    gaps = [b - a for a, b in itertools.pairwise(waits[3:])]
    assert all(0.09 < gap < 0.11 for gap in gaps), waits
