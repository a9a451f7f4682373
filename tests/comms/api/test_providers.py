"""/v1/providers: CRUD, failover order, test calls, tenant isolation, write-only secrets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from comms.api import create_app
from comms.devsink import SinkHandler, SmtpSink
from comms.providers.smtp import close_all_connections
from comms.tenants import create_tenant, issue_operator_key

SECRET = "pw-never-shown-7731"


@pytest.fixture
def client(session: Session) -> Iterator[TestClient]:
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keys(session: Session) -> dict[str, str]:
    _, a = create_tenant(session, "a")
    _, b = create_tenant(session, "b")
    op = issue_operator_key(session)
    session.commit()
    return {"a": a.key, "b": b.key, "operator": op.key}


def test_crud_with_write_only_secrets(client: TestClient, keys: dict[str, str]) -> None:
    created = client.post(
        "/v1/providers",
        json={"kind": "smtp", "name": "relay", "priority": 5,
              "settings": {"host": "smtp.example.com", "username": "u", "password": SECRET}},
        headers=_auth(keys["a"]),
    )  # fmt: skip
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["settings"]["password"] == "********"
    pid = view["id"]

    patched = client.patch(
        f"/v1/providers/{pid}", json={"priority": 1, "settings": {"port": 2525}},
        headers=_auth(keys["a"]),
    )  # fmt: skip
    assert patched.status_code == 200
    assert patched.json()["priority"] == 1
    assert patched.json()["settings"]["port"] == 2525
    assert patched.json()["settings"]["password"] == "********"  # kept, still masked

    listed = client.get("/v1/providers", headers=_auth(keys["a"]))
    assert [p["id"] for p in listed.json()] == [pid]
    assert SECRET not in listed.text + created.text + patched.text

    assert client.delete(f"/v1/providers/{pid}", headers=_auth(keys["a"])).status_code == 204
    assert client.get(f"/v1/providers/{pid}", headers=_auth(keys["a"])).status_code == 404


def test_bad_settings_name_the_problem(client: TestClient, keys: dict[str, str]) -> None:
    missing = client.post(
        "/v1/providers",
        json={"kind": "smtp", "name": "x", "settings": {}},
        headers=_auth(keys["a"]),
    )
    assert missing.status_code == 422
    assert "'host' is required" in missing.json()["detail"]
    unknown = client.post(
        "/v1/providers", json={"kind": "pigeon", "name": "x"}, headers=_auth(keys["a"])
    )
    assert unknown.status_code == 422
    assert "unknown provider 'pigeon'" in unknown.json()["detail"]


def test_tenants_cannot_see_touch_or_test_each_others_providers(
    client: TestClient, keys: dict[str, str]
) -> None:
    pid = client.post(
        "/v1/providers", json={"kind": "console", "name": "mine"}, headers=_auth(keys["a"])
    ).json()["id"]
    b = _auth(keys["b"])
    assert client.get("/v1/providers", headers=b).json() == []
    assert client.get(f"/v1/providers/{pid}", headers=b).status_code == 404
    assert (
        client.patch(f"/v1/providers/{pid}", json={"active": False}, headers=b).status_code == 404
    )
    assert client.post(f"/v1/providers/{pid}/test", headers=b).status_code == 404
    assert client.delete(f"/v1/providers/{pid}", headers=b).status_code == 404
    assert client.get(f"/v1/providers/{pid}", headers=_auth(keys["a"])).json()["active"] is True


def test_system_defaults_need_an_operator_key(client: TestClient, keys: dict[str, str]) -> None:
    op = _auth(keys["operator"])
    created = client.post("/v1/providers", json={"kind": "console", "name": "default"}, headers=op)
    assert created.status_code == 201
    assert created.json()["tenant_id"] is None
    assert client.get("/v1/providers", headers=_auth(keys["a"])).json() == []
    assert [p["name"] for p in client.get("/v1/providers", headers=op).json()] == ["default"]
    # an operator key is not a tenant: it cannot send
    sent = client.post(
        "/v1/messages/email",
        json={"from": "a@example.com", "to": ["b@example.org"], "subject": "s", "text": "t"},
        headers=op,
    )
    assert sent.status_code == 401


def test_provider_test_reports_what_is_wrong(client: TestClient, keys: dict[str, str]) -> None:
    with SmtpSink(SinkHandler()) as sink:
        ok_id = client.post(
            "/v1/providers",
            json={
                "kind": "smtp",
                "name": "ok",
                "settings": {"host": "127.0.0.1", "port": sink.port},
            },
            headers=_auth(keys["a"]),
        ).json()["id"]
        result = client.post(f"/v1/providers/{ok_id}/test", headers=_auth(keys["a"])).json()
        close_all_connections()
    assert result["ok"] is True and "connected to 127.0.0.1" in result["detail"]
    dead_id = client.post(
        "/v1/providers",
        json={"kind": "smtp", "name": "dead", "settings": {"host": "127.0.0.1", "port": 1}},
        headers=_auth(keys["a"]),
    ).json()["id"]
    dead = client.post(f"/v1/providers/{dead_id}/test", headers=_auth(keys["a"])).json()
    assert dead["ok"] is False and "cannot connect" in dead["detail"]


def test_no_plaintext_secret_in_the_database(
    client: TestClient, keys: dict[str, str], session: Session
) -> None:
    client.post(
        "/v1/providers",
        json={"kind": "smtp", "name": "relay", "settings": {"host": "h", "password": SECRET}},
        headers=_auth(keys["a"]),
    )
    dump = session.execute(
        text("SELECT string_agg(t::text, '\n') FROM provider_configs t")
    ).scalar_one()
    assert "relay" in dump and SECRET not in dump
