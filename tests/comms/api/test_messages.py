"""The HTTP API against the real embedded PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms.api import create_app
from comms.models import Delivery, DeliveryState, Message
from comms.tenants import create_tenant

EMAIL = {
    "from": "billing@acme.example",
    "to": ["ann@example.org", "bob@example.org"],
    "subject": "Receipt",
    "text": "Thanks for your order",
}


@pytest.fixture
def api(session: Session) -> Iterator[tuple[TestClient, dict[str, str]]]:
    _, key = create_tenant(session, "acme")
    session.commit()
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {key.key}"}


def _rows(session: Session, model: Any) -> int:
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_email_is_accepted_with_one_pending_delivery_per_recipient(
    api: tuple[TestClient, dict[str, str]], session: Session
) -> None:
    client, auth = api
    response = client.post("/v1/messages/email", json=EMAIL, headers=auth)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["recipients"] == 2
    states = session.scalars(
        select(Delivery.state).where(Delivery.message_id == uuid.UUID(body["id"]))
    ).all()
    assert states == [DeliveryState.PENDING, DeliveryState.PENDING]

    status = client.get(f"/v1/messages/{body['id']}", headers=auth)
    assert status.status_code == 200
    assert [r["to"] for r in status.json()["recipients"]] == EMAIL["to"]
    assert {r["status"] for r in status.json()["recipients"]} == {"pending"}


def test_idempotency_key_replays_the_first_message(
    api: tuple[TestClient, dict[str, str]], session: Session
) -> None:
    client, auth = api
    headers = {**auth, "Idempotency-Key": "order-1"}
    first = client.post("/v1/messages/email", json=EMAIL, headers=headers)
    again = client.post("/v1/messages/email", json=EMAIL, headers=headers)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert _rows(session, Message) == 1
    assert _rows(session, Delivery) == 2

    other = client.post("/v1/messages/email", json={**EMAIL, "subject": "Other"}, headers=headers)
    assert other.status_code == 409
    assert other.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**EMAIL, "to": ["not-an-address"]}, "to.0"),
        ({**EMAIL, "to": []}, "to"),
        ({k: v for k, v in EMAIL.items() if k != "subject"}, "subject"),
        ({**EMAIL, "text": None}, "(body)"),
        ({**EMAIL, "surprise": 1}, "surprise"),
        ({**EMAIL, "headers": {"From": "evil@example.com"}}, "headers"),
        ({**EMAIL, "subject": "two\nlines"}, "subject"),
    ],
)
def test_bad_email_names_the_field_and_writes_nothing(
    api: tuple[TestClient, dict[str, str]], session: Session, payload: dict[str, Any], field: str
) -> None:
    client, auth = api
    response = client.post("/v1/messages/email", json=payload, headers=auth)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    assert field in [e["field"] for e in problem["errors"]], problem
    assert "not-an-address" not in response.text  # input is never echoed
    assert _rows(session, Message) == 0


def test_malformed_json_is_a_problem(api: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = api
    response = client.post(
        "/v1/messages/email",
        content=b'{"from": ',
        headers={**auth, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["title"] == "Malformed JSON"


def test_idempotency_key_too_long(api: tuple[TestClient, dict[str, str]], session: Session) -> None:
    client, auth = api
    response = client.post(
        "/v1/messages/email", json=EMAIL, headers={**auth, "Idempotency-Key": "k" * 201}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"
    assert _rows(session, Message) == 0


@pytest.mark.parametrize(
    "header", [None, "Bearer nope", "Bearer ck_000000000000_forged", "Basic x"]
)
def test_requests_without_a_valid_key_are_refused(
    api: tuple[TestClient, dict[str, str]], header: str | None
) -> None:
    client, _ = api
    headers = {"Authorization": header} if header else {}
    response = client.post("/v1/messages/email", json=EMAIL, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


def test_another_tenants_message_is_not_found(
    api: tuple[TestClient, dict[str, str]], session: Session
) -> None:
    client, auth = api
    message_id = client.post("/v1/messages/email", json=EMAIL, headers=auth).json()["id"]
    _, other = create_tenant(session, "rival")
    session.commit()
    response = client.get(
        f"/v1/messages/{message_id}", headers={"Authorization": f"Bearer {other.key}"}
    )
    assert response.status_code == 404
    assert client.get("/v1/messages/not-a-uuid", headers=auth).status_code == 404


def test_sms(api: tuple[TestClient, dict[str, str]], session: Session) -> None:
    client, auth = api
    ok = client.post(
        "/v1/messages/sms", json={"to": ["+15551234567"], "body": "Your code is 1234"}, headers=auth
    )
    assert ok.status_code == 202
    bad = client.post("/v1/messages/sms", json={"to": ["555-1234"], "body": "x"}, headers=auth)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "to.0"
    assert _rows(session, Message) == 1


def test_openapi_and_health(api: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = api
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/messages/email", "/v1/messages/sms", "/v1/messages/{message_id}"} <= set(paths)
    assert client.get("/healthz").json() == {"status": "ok"}
