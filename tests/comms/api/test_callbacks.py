"""Twilio status callbacks and our webhook provider's callbacks, over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms.api import create_app
from comms.api.webhooks import twilio_signature
from comms.models import Channel, Delivery, DeliveryState, Event
from comms.provider_configs import create_provider_config
from comms.providers.webhook import sign
from tests.factories import DeliveryFactory, TenantFactory

TOKEN = "twilio-auth-token-1234"


@pytest.fixture
def client(session: Session) -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def _events(session: Session) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def test_twilio_callback_is_verified_and_moves_the_delivery(
    client: TestClient, session: Session
) -> None:
    tenant = TenantFactory()
    config = create_provider_config(
        session, kind="twilio", name="sms", tenant_id=tenant.id, channel=Channel.SMS,
        settings={"account_sid": "AC1", "auth_token": TOKEN, "from_number": "+15550000000"},
    )  # fmt: skip
    delivery = DeliveryFactory(
        state=DeliveryState.SENT, provider_config_id=config.id, recipient="+15551234567",
        provider_message_id="SM123",
    )  # fmt: skip
    session.commit()
    path = f"/v1/webhooks/twilio?delivery_id={delivery.id}"
    form = {"MessageSid": "SM123", "MessageStatus": "delivered", "To": "+15551234567",
            "AccountSid": "AC1"}  # fmt: skip
    good = twilio_signature(TOKEN, f"http://127.0.0.1:8025{path}", form)

    forged = client.post(path, data=form, headers={"X-Twilio-Signature": "bm9wZQ=="})
    assert forged.status_code == 403
    assert _events(session) == 0

    ok = client.post(path, data=form, headers={"X-Twilio-Signature": good})
    assert ok.status_code == 200, ok.text
    again = client.post(path, data=form, headers={"X-Twilio-Signature": good})
    assert again.json()["duplicates"] == 1
    assert _events(session) == 1
    assert session.get_one(Delivery, delivery.id).state is DeliveryState.DELIVERED

    unknown = client.post("/v1/webhooks/twilio?delivery_id=nope", data=form)
    assert unknown.status_code == 403


def test_custom_webhook_callbacks(client: TestClient, session: Session) -> None:
    tenant = TenantFactory()
    config = create_provider_config(
        session, kind="webhook", name="own", tenant_id=tenant.id,
        settings={"url": "https://hooks.example.com/send", "signing_secret": "whsec-1"},
    )  # fmt: skip
    delivery = DeliveryFactory(state=DeliveryState.SENT, tenant_id=tenant.id)
    session.commit()
    body = json.dumps({"event_id": "e-1", "type": "bounced", "delivery_id": str(delivery.id),
                       "recipient": delivery.recipient}).encode()  # fmt: skip
    url = f"/v1/webhooks/custom/{config.id}"
    headers = {"Comms-Signature": sign("whsec-1", body, int(time.time())),
               "Content-Type": "application/json"}  # fmt: skip
    bad = client.post(url, content=body, headers={**headers, "Comms-Signature": "t=1,v1=00"})
    assert bad.status_code == 403 and _events(session) == 0
    assert client.post(url, content=body, headers=headers).json()["recorded"] == 1
    session.expire_all()
    assert session.get_one(Delivery, delivery.id).state is DeliveryState.BOUNCED

    unknown_type = json.dumps({"event_id": "e-2", "type": "exploded",
                               "delivery_id": str(delivery.id)}).encode()  # fmt: skip
    response = client.post(url, content=unknown_type, headers={
        **headers, "Comms-Signature": sign("whsec-1", unknown_type, int(time.time()))})  # fmt: skip
    assert response.status_code == 400 and "unknown event type" in response.json()["detail"]
