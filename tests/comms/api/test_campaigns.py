"""Campaigns and subscriber import over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms.api import create_app
from comms.models import Subscriber
from comms.tenants import create_tenant


@pytest.fixture
def api(session: Session) -> Iterator[tuple[TestClient, dict[str, str]]]:
    _, key = create_tenant(session, "acme")
    session.commit()
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c, {"Authorization": f"Bearer {key.key}"}


def test_import_create_fire_pause_resume_cancel(
    api: tuple[TestClient, dict[str, str]], session: Session
) -> None:
    client, auth = api
    batch = {"subscribers": [
        {"email": f"r{i}@example.org", "tags": ["news"], "fields": {"first_name": f"R{i}"}}
        for i in range(5)
    ]}  # fmt: skip
    imported = client.post("/v1/subscribers:batch", json=batch, headers=auth)
    assert imported.json() == {"received": 5, "written": 5}
    again = client.post("/v1/subscribers:batch", json=batch, headers=auth)
    assert again.json()["written"] == 5  # upserted, not duplicated
    assert session.scalar(select(func.count()).select_from(Subscriber)) == 5

    created = client.post(
        "/v1/campaigns",
        json={"name": "Nov", "from": "news@acme.example", "subject": "Hi {{ first_name }}",
              "text": "Hello", "tags": ["news"]},
        headers=auth,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    assert created.json()["status"] == "draft" and created.json()["audience"] == 5

    assert client.post(f"/v1/campaigns/{cid}:fire", headers=auth).json()["status"] == "firing"
    refire = client.post(f"/v1/campaigns/{cid}:fire", headers=auth)
    assert refire.status_code == 409
    assert "only a draft can be fired" in refire.json()["detail"]
    assert client.post(f"/v1/campaigns/{cid}:pause", headers=auth).json()["status"] == "paused"
    assert client.post(f"/v1/campaigns/{cid}:resume", headers=auth).json()["status"] == "firing"
    assert client.post(f"/v1/campaigns/{cid}:cancel", headers=auth).json()["status"] == "cancelled"
    assert [c["id"] for c in client.get("/v1/campaigns", headers=auth).json()] == [cid]


def test_bad_campaign_and_subscriber_input(
    api: tuple[TestClient, dict[str, str]], session: Session
) -> None:
    client, auth = api
    bad = client.post(
        "/v1/campaigns", json={"name": "x", "from": "nope", "subject": "s"}, headers=auth
    )
    assert bad.status_code == 422
    assert "from" in [e["field"] for e in bad.json()["errors"]]
    rows = client.post(
        "/v1/subscribers:batch",
        json={"subscribers": [{"email": "ok@example.org"}, {"email": "broken"},
                              {"email": "tz@example.org", "timezone": "Mars/Olympus"}]},
        headers=auth,
    )  # fmt: skip
    assert rows.status_code == 422
    fields = [e["field"] for e in rows.json()["errors"]]
    assert "subscribers.1.email" in fields and "subscribers.2.timezone" in fields
    assert session.scalar(select(func.count()).select_from(Subscriber)) == 0
    missing = client.get("/v1/campaigns/00000000-0000-0000-0000-000000000000", headers=auth)
    assert missing.status_code == 404
