"""Task bodies run in-process: malformed or refused commands are dropped, not retried."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms.models import Delivery, Message
from workers.tasks import send_email


def _payload(tenant: uuid.UUID, **overrides: object) -> dict[str, object]:
    return {
        "tenant_id": str(tenant), "from": "a@example.com", "to": ["b@example.org"],
        "subject": "s", "text": "t", "idempotency_key": "k1", **overrides,
    }  # fmt: skip


def test_a_command_becomes_rows_once(session: Session, tenant: uuid.UUID) -> None:
    first = send_email.run(_payload(tenant))
    second = send_email.run(_payload(tenant))
    assert first is not None and first == second
    assert session.scalar(select(func.count()).select_from(Message)) == 1
    assert session.scalar(select(func.count()).select_from(Delivery)) == 1


def test_malformed_unknown_tenant_and_conflicting_commands_are_dropped(
    session: Session, tenant: uuid.UUID
) -> None:
    assert send_email.run({"nonsense": True}) is None
    assert send_email.run("not an object") is None  # type: ignore[arg-type]
    assert send_email.run(_payload(uuid.uuid4())) is None
    assert send_email.run(_payload(tenant)) is not None
    assert send_email.run(_payload(tenant, subject="different")) is None
    assert session.scalar(select(func.count()).select_from(Message)) == 1
