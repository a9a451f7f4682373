"""POST /v1/webhooks/ses with real HTTP requests and SNS messages signed by a local CA."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms.api import create_app
from comms.models import Delivery, DeliveryState, Event, SuppressionReason
from comms.suppression import suppression_reason
from tests.factories import DeliveryFactory
from tests.snsutil import TOPIC, Signer, make_signer, notification


@pytest.fixture
def signer() -> Signer:
    return make_signer()


@pytest.fixture
def client(
    session: Session, signer: Signer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    from comms.settings import reset_settings

    ca = tmp_path / "ca.pem"
    ca.write_bytes(signer.ca_pem)
    monkeypatch.setenv("COMMS_SNS_ALLOWED_TOPICS", json.dumps([TOPIC]))
    monkeypatch.setenv("COMMS_SNS_TRUSTED_CA_FILE", str(ca))
    reset_settings()
    with TestClient(create_app(aws_transport=signer.transport())) as c:
        yield c
    monkeypatch.undo()
    reset_settings()


def _bounce(delivery: Delivery, kind: str = "Permanent") -> str:
    return json.dumps({
        "eventType": "Bounce",
        "mail": {"messageId": "ses-1", "destination": [delivery.recipient],
                 "tags": {"delivery_id": [str(delivery.id)]}},
        "bounce": {"bounceType": kind, "bounceSubType": "General",
                   "bouncedRecipients": [{"emailAddress": delivery.recipient}]},
    })  # fmt: skip


def _post(client: TestClient, message: dict[str, object]) -> httpx.Response:
    # SNS posts JSON with a text/plain content type
    return client.post("/v1/webhooks/ses", content=json.dumps(message),
                       headers={"Content-Type": "text/plain; charset=UTF-8",
                                "x-amz-sns-message-type": str(message["Type"])})  # fmt: skip


def _events(session: Session) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def test_a_genuine_bounce_is_recorded_once_and_suppresses(
    client: TestClient, signer: Signer, session: Session
) -> None:
    delivery = DeliveryFactory(state=DeliveryState.SENT)
    session.commit()
    message = signer.sign(notification(_bounce(delivery)))
    first = _post(client, message)
    assert first.status_code == 200, first.text
    assert first.json() == {"recorded": 1, "duplicates": 0, "unknown": 0}
    assert _post(client, message).json()["duplicates"] == 1
    assert _events(session) == 1
    assert session.get_one(Delivery, delivery.id).state is DeliveryState.BOUNCED
    assert suppression_reason(session, delivery.tenant_id, delivery.recipient) is (
        SuppressionReason.HARD_BOUNCE
    )


def test_forgeries_are_refused_and_record_nothing(
    client: TestClient, signer: Signer, session: Session
) -> None:
    delivery = DeliveryFactory(state=DeliveryState.SENT)
    session.commit()
    good = signer.sign(notification(_bounce(delivery)))
    flipped = {**good, "Message": good["Message"].replace("Permanent", "Permanenu")}
    foreign_host = {**good, "SigningCertURL": "https://attacker.example.com/cert.pem"}
    stale = signer.sign(notification(_bounce(delivery), minutes_old=90))
    other_topic = signer.sign({**notification(_bounce(delivery)), "TopicArn": "arn:aws:sns:x:1:t"})
    for forged in (flipped, foreign_host, stale, other_topic):
        response = _post(client, forged)
        assert response.status_code == 403, forged
    garbage = client.post("/v1/webhooks/ses", content=b"{not json")
    assert garbage.status_code == 400
    assert _events(session) == 0
    assert session.get_one(Delivery, delivery.id).state is DeliveryState.SENT


def test_subscription_confirmation_visits_only_sns(client: TestClient, signer: Signer) -> None:
    msg = notification("confirm me")
    msg.update(
        Type="SubscriptionConfirmation",
        Token="t",
        SubscribeURL="https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=t",
    )
    assert _post(client, signer.sign(msg)).json() == {"confirmed": TOPIC}
    msg["SubscribeURL"] = "https://attacker.example.com/?Action=ConfirmSubscription"
    assert _post(client, signer.sign(msg)).status_code == 400
