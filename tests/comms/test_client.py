"""The producer client validates before it publishes anything."""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from comms import client
from comms.commands import CommandError
from comms.devstack import StackInfo


def _queued(stack: StackInfo) -> list[dict[str, object]]:
    r = redis.Redis.from_url(stack.redis_url)
    try:
        return [json.loads(m) for m in r.lrange("send", 0, -1)]
    finally:
        r.close()


def test_publishes_a_json_command_by_task_name(stack: StackInfo, clean_db: None) -> None:
    tenant_id = uuid.uuid4()
    key = client.send_email(
        tenant_id=tenant_id, sender="a@example.com", to=["b@example.org"], subject="s", text="t"
    )
    (message,) = _queued(stack)
    assert message["headers"]["task"] == "comms.send_email"  # type: ignore[index]
    body = json.loads(__import__("base64").b64decode(message["body"]))  # type: ignore[arg-type]
    args = body[0]
    assert args[0]["tenant_id"] == str(tenant_id)
    assert args[0]["idempotency_key"] == key
    assert args[0]["to"] == ["b@example.org"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"to": []}, "to"),
        ({"to": ["x"]}, "to.0"),
        ({"subject": ""}, "subject"),
        ({"tenant_id": "acme"}, "tenant_id"),
        ({"headers": {"Bad Name": "x"}}, "headers"),
    ],
)
def test_bad_commands_name_the_field_and_publish_nothing(
    stack: StackInfo, clean_db: None, kwargs: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {
        "tenant_id": uuid.uuid4(), "sender": "a@example.com", "to": ["b@example.org"],
        "subject": "s", "text": "t",
    }  # fmt: skip
    args.update(kwargs)
    with pytest.raises(CommandError) as info:
        client.send_email(**args)  # type: ignore[arg-type]
    assert field in [e["field"] for e in info.value.errors]
    assert _queued(stack) == []


def test_sms_numbers_must_be_e164(stack: StackInfo, clean_db: None) -> None:
    with pytest.raises(CommandError) as info:
        client.send_sms(tenant_id=uuid.uuid4(), to=["0612345678"], body="hi")
    assert info.value.errors[0]["field"] == "to.0"
    assert _queued(stack) == []
