"""One-click unsubscribe (RFC 8058) and the headers campaign mail carries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from comms.api import create_app
from comms.models import SuppressionReason
from comms.suppression import suppression_reason
from tests.campaign_mail import send_campaign_mail
from tests.factories import SubscriberFactory, TenantFactory


@pytest.fixture
def client(session: Session) -> Iterator[TestClient]:
    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c


def test_campaign_mail_carries_one_click_headers_and_a_working_link(
    session: Session, client: TestClient
) -> None:
    tenant = TenantFactory()
    subscriber = SubscriberFactory(tenant_id=tenant.id, email="ann@example.org")
    _, _, mail = send_campaign_mail(session, tenant.id, sender="news@example.com", text="Hello")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = (part.strip(" <>") for part in str(mail["List-Unsubscribe"]).split(","))
    assert https.startswith("http://127.0.0.1:8025/u/") and mailto.startswith("mailto:")
    body = mail.get_content()
    assert f"Unsubscribe: {https}" in body  # a visible link as well

    path = https.removeprefix("http://127.0.0.1:8025")
    page = client.get(path)
    assert page.status_code == 200 and '<form method="post"' in page.text
    assert suppression_reason(session, tenant.id, subscriber.email) is None  # GET changes nothing

    # exactly what Gmail sends: a form body, no cookies, no confirmation step
    done = client.post(
        path, content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert done.status_code == 200
    session.expire_all()
    assert suppression_reason(session, tenant.id, subscriber.email) is SuppressionReason.UNSUBSCRIBE
    again = client.post(path, content=b"List-Unsubscribe=One-Click")
    assert again.status_code == 200  # idempotent


@pytest.mark.parametrize("token", ["garbage", "a.b", "AAAA.BBBB", ""])
def test_bad_tokens_are_404_with_no_detail(client: TestClient, token: str) -> None:
    for response in (client.get(f"/u/{token}"), client.post(f"/u/{token}")):
        assert response.status_code == 404
        assert "signature" not in response.text.lower() and "mac" not in response.text.lower()


def test_a_tampered_token_is_404(client: TestClient, session: Session) -> None:
    import uuid

    from comms.links import UnsubscribeToken, sign_unsubscribe

    tenant = TenantFactory()
    sub = SubscriberFactory(tenant_id=tenant.id)
    session.commit()
    token = sign_unsubscribe(UnsubscribeToken(tenant.id, sub.id, uuid.uuid4()))
    body, mac = token.split(".")
    forged = f"{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}.{mac}"
    assert client.post(f"/u/{forged}").status_code == 404
    assert client.post(f"/u/{token}").status_code == 200
