"""The producer client: validate a delivery command and publish it by task name.

A producer needs only the broker URL (``COMMS_REDIS_URL`` or ``broker_url=``),
never database credentials::

    from comms.client import send_email
    key = send_email(tenant_id=TENANT, sender="news@example.com", to=["ann@example.org"],
                     subject="Hello", text="Hi Ann")

Each call returns the idempotency key it published with (one is generated when
none is given), so a producer that retries with the same key sends once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from celery import Celery

from comms import contract
from comms.commands import EmailCommand, SmsCommand, parse_command

__all__ = ["send_email", "send_sms"]


@lru_cache(maxsize=8)
def _app_for(broker_url: str) -> Celery:
    from comms.dispatch import celery_config

    app = Celery("comms-client")
    app.conf.update(celery_config(broker_url))
    return app


def _publish(task_name: str, command: EmailCommand | SmsCommand, broker_url: str | None) -> None:
    payload = command.model_dump(by_alias=True, mode="json")
    if broker_url is None:
        from comms.dispatch import publish

        publish(task_name, [payload])
    else:
        _app_for(broker_url).send_task(
            task_name, args=[payload], queue=contract.queue_for(task_name)
        )


def send_email(
    *,
    tenant_id: uuid.UUID | str,
    sender: str,
    to: Sequence[str],
    subject: str,
    text: str | None = None,
    html: str | None = None,
    reply_to: str | None = None,
    headers: Mapping[str, str] | None = None,
    metadata: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    broker_url: str | None = None,
) -> str:
    """Publish a ``comms.send_email`` command; raises CommandError naming bad fields."""
    data: dict[str, Any] = {
        "tenant_id": str(tenant_id),
        "from": sender,
        "to": list(to),
        "subject": subject,
        "text": text,
        "html": html,
        "reply_to": reply_to,
        "headers": dict(headers or {}),
        "metadata": dict(metadata or {}),
        "idempotency_key": idempotency_key or str(uuid.uuid4()),
    }
    command = parse_command(EmailCommand, data)
    _publish(contract.SEND_EMAIL, command, broker_url)
    assert command.idempotency_key is not None
    return command.idempotency_key


def send_sms(
    *,
    tenant_id: uuid.UUID | str,
    to: Sequence[str],
    body: str,
    sender: str | None = None,
    metadata: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
    broker_url: str | None = None,
) -> str:
    """Publish a ``comms.send_sms`` command; raises CommandError naming bad fields."""
    data: dict[str, Any] = {
        "tenant_id": str(tenant_id),
        "from": sender,
        "to": list(to),
        "body": body,
        "metadata": dict(metadata or {}),
        "idempotency_key": idempotency_key or str(uuid.uuid4()),
    }
    command = parse_command(SmsCommand, data)
    _publish(contract.SEND_SMS, command, broker_url)
    assert command.idempotency_key is not None
    return command.idempotency_key
