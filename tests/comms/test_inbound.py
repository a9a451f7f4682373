"""Inbound replies: the listener's refusals over real SMTP, threading, bounces, forwarding."""

from __future__ import annotations

import email
import hmac
import http.server
import json
import smtplib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.orm import Session

from comms.devstack import free_port
from comms.inbound.replies import (
    consumer_secret,
    forward_due,
    forward_reply,
    set_consumer,
    set_reply_domain,
    thread_message,
)
from comms.inbound.store import Envelope, LocalStore
from comms.links import BadToken, reply_address, sign_reply, verify_reply
from comms.models import (
    Delivery,
    DeliveryState,
    Event,
    InboundReply,
    SuppressionReason,
)
from comms.settings import get_settings
from comms.suppression import suppression_reason
from tests.campaign_mail import send_campaign_mail
from tests.factories import SubscriberFactory, TenantFactory

DOMAIN = "news.acme.example"


@dataclass
class Sent:
    tenant_id: uuid.UUID
    delivery_id: uuid.UUID
    subscriber_id: uuid.UUID
    campaign_id: uuid.UUID
    mail: email.message.EmailMessage


@pytest.fixture
def sent(session: Session) -> Sent:
    """A real campaign mail to ann@example.org from a tenant whose replies come to DOMAIN."""
    tenant = TenantFactory()
    subscriber = SubscriberFactory(tenant_id=tenant.id, email="ann@example.org")
    session.commit()
    set_reply_domain(session, tenant.id, DOMAIN)
    campaign_id, delivery_id, mail = send_campaign_mail(
        session, tenant.id, sender="news@acme.example", subject="News", text="Hi"
    )
    return Sent(tenant.id, delivery_id, subscriber.id, campaign_id, mail)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture
def listener(stack: Any, store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from workers.listener import ReplyListener

    settings = get_settings().model_copy(
        update={
            "inbound_port": free_port(),
            "inbound_max_message_bytes": 50_000,
            "inbound_max_recipients": 2,
            "inbound_rate_per_tenant": 0.01,
            "inbound_burst_per_tenant": 5,
        }
    )
    server = ReplyListener(settings, store)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _reply(to: str, body: str = "Yes please, count me in!", **headers: str) -> bytes:
    lines = [
        "From: Ann <ann@example.org>",
        f"To: {to}",
        "Subject: Re: News",
        "Message-ID: <r1@example.org>",
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
        "",
        body,
        "",
        "On Tue, 24 Nov 2026 at 10:00, Acme News <news@acme.example> wrote:",
        "> Hi",
    ]
    return "\r\n".join(lines).encode()


def _rcpt(port: int, *recipients: str) -> list[tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.mail("ann@example.org")
        return [client.rcpt(r) for r in recipients]


# -- reply tokens ------------------------------------------------------------------
def test_reply_tokens_name_their_delivery_and_resist_forgery(stack: Any) -> None:
    delivery = uuid.uuid4()
    token = sign_reply(delivery)
    assert verify_reply(token) == delivery
    assert verify_reply(token.upper()) == delivery  # a case-folding relay changes nothing
    assert len(f"reply+{token}") <= 64  # RFC 5321 local-part limit
    other = sign_reply(uuid.uuid4())
    with pytest.raises(BadToken):
        verify_reply(token[:26] + other[26:])  # our delivery id, someone else's MAC
    with pytest.raises(BadToken):
        verify_reply("not-a-token")


def test_campaign_mail_asks_for_replies_at_the_tenant_reply_domain(sent: Sent) -> None:
    assert str(sent.mail["Reply-To"]) == reply_address(sent.delivery_id, DOMAIN)
    assert str(sent.mail["Message-ID"]).startswith(f"<{sent.delivery_id}@")


# -- the listener, over real SMTP sessions -----------------------------------------
def test_listener_refuses_what_is_not_a_genuine_reply_address_at_rcpt(
    sent: Sent, listener: Any
) -> None:
    good = reply_address(sent.delivery_id, DOMAIN)
    forged = f"reply+{sign_reply(uuid.uuid4())}@{DOMAIN}"  # a valid MAC, no such delivery
    tampered = good.replace("reply+", "reply+a", 1)
    codes = _rcpt(
        listener.bound_port,
        "someone@gmail.com",  # not our domain: never an open relay
        f"postmaster@{DOMAIN}",
        forged,
        tampered,
        good,
    )
    assert [c for c, _ in codes] == [550, 550, 550, 550, 250]
    assert all(b"5.1.1" in text for _, text in codes[:4])


def test_listener_stores_the_message_before_answering_250(
    sent: Sent, listener: Any, store: LocalStore
) -> None:
    with smtplib.SMTP("127.0.0.1", listener.bound_port, timeout=10) as client:
        refused = client.sendmail(
            "ann@example.org", [reply_address(sent.delivery_id, DOMAIN)], _reply("x")
        )
    assert refused == {}
    (key,) = list(store.list_keys())
    raw, envelope = store.get(key)
    assert raw.replace(b"\r\n", b"\n").rstrip() == _reply("x").replace(b"\r\n", b"\n").rstrip()
    assert envelope.recipients == [reply_address(sent.delivery_id, DOMAIN)]
    assert envelope.mail_from == "ann@example.org"


def test_listener_limits_size_recipients_and_rate(sent: Sent, listener: Any) -> None:
    good = reply_address(sent.delivery_id, DOMAIN)
    big = _reply(good, "\r\n".join(["x" * 70] * 1000))
    with smtplib.SMTP("127.0.0.1", listener.bound_port, timeout=10) as client:
        # a client that declares SIZE is refused at MAIL FROM ...
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            client.sendmail("ann@example.org", [good], big)
        assert declared.value.smtp_code == 552
        # ... and one that does not, after DATA, with nothing stored
        client.rset()
        assert client.mail("ann@example.org")[0] == 250
        assert client.rcpt(good)[0] == 250
        assert client.data(big)[0] == 552

    # recipients: the third RCPT of one transaction is refused
    codes = _rcpt(listener.bound_port, good, good, good)
    assert [c for c, _ in codes][:2] == [250, 250] and codes[2][0] == 452

    # rate: burst 5 per tenant and almost no refill; two were used above, one more here
    results = [c for c, _ in _rcpt(listener.bound_port, good, good)]
    results += [c for c, _ in _rcpt(listener.bound_port, good)]
    results += [c for c, _ in _rcpt(listener.bound_port, good)]
    assert 451 in results
    assert results[results.index(451) :] == [451] * len(results[results.index(451) :])


# -- threading ---------------------------------------------------------------------
def _stored(store: LocalStore, raw: bytes, recipients: list[str]) -> str:
    return store.put(raw, Envelope(recipients=recipients, mail_from="ann@example.org"))


@pytest.fixture
def use_store(store: LocalStore, monkeypatch: pytest.MonkeyPatch) -> LocalStore:
    import comms.inbound.replies as replies

    monkeypatch.setattr(replies, "get_store", lambda: store)
    return store


def test_a_reply_is_threaded_once_to_delivery_subscriber_and_campaign(
    sent: Sent, use_store: LocalStore, session: Session
) -> None:
    to = reply_address(sent.delivery_id, DOMAIN)
    key = _stored(use_store, _reply(to), [to])
    reply_id = thread_message(key)
    assert reply_id is not None and thread_message(key) == reply_id  # idempotent
    reply = session.get_one(InboundReply, reply_id)
    assert (reply.kind, reply.delivery_id, reply.subscriber_id, reply.campaign_id) == (
        "reply", sent.delivery_id, sent.subscriber_id, sent.campaign_id,
    )  # fmt: skip
    assert reply.text == "Yes please, count me in!"  # quoted history removed
    assert reply.threaded_at is not None and reply.from_address == "ann@example.org"
    types = session.scalars(select(Event.type).where(Event.delivery_id == sent.delivery_id))
    assert list(types).count("replied") == 1


def test_an_auto_reply_is_kept_but_not_threaded(
    sent: Sent, use_store: LocalStore, session: Session
) -> None:
    to = reply_address(sent.delivery_id, DOMAIN)
    raw = _reply(to, "I am out of the office until Monday.", Auto_Submitted="auto-replied")
    reply = session.get_one(InboundReply, thread_message(_stored(use_store, raw, [to])))
    assert reply.kind == "auto_reply" and reply.auto_reply and reply.threaded_at is None
    assert reply.next_forward_at is None  # never forwarded to the consumer


def test_a_delivery_status_notification_bounces_the_delivery(
    sent: Sent, use_store: LocalStore, session: Session
) -> None:
    to = reply_address(sent.delivery_id, DOMAIN)
    dsn = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n"
        f"To: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        "Final-Recipient: rfc822; ann@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--B--\r\n"
    ).encode()
    reply = session.get_one(InboundReply, thread_message(_stored(use_store, dsn, [to])))
    assert reply.kind == "bounce" and reply.threaded_at is None
    session.expire_all()
    assert session.get_one(Delivery, sent.delivery_id).state is DeliveryState.BOUNCED
    assert suppression_reason(session, sent.tenant_id, "ann@example.org") is (
        SuppressionReason.HARD_BOUNCE
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=3000))
def test_malformed_mail_never_crashes_the_threading_task(
    sent: Sent, use_store: LocalStore, body: bytes
) -> None:
    to = reply_address(sent.delivery_id, DOMAIN)
    reply_id = thread_message(_stored(use_store, body, [to]))
    assert reply_id is not None


# -- forwarding to the consumer ----------------------------------------------------
class _Consumer(http.server.BaseHTTPRequestHandler):
    status = 200
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("COMMS_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
    _Consumer.received = []
    _Consumer.status = 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Consumer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/replies"
    finally:
        server.shutdown()
        server.server_close()


def test_replies_wait_for_a_consumer_then_arrive_signed_and_retry_on_failure(
    sent: Sent, use_store: LocalStore, session: Session, consumer: str
) -> None:
    from datetime import UTC, datetime, timedelta

    from comms.providers.webhook import verify

    to = reply_address(sent.delivery_id, DOMAIN)
    reply_id = thread_message(_stored(use_store, _reply(to), [to]))
    assert reply_id is not None
    assert forward_reply(reply_id) == "held: no consumer configured"

    _Consumer.status = 503
    assert set_consumer(session, sent.tenant_id, consumer) == 1  # the held reply is released
    session.commit()
    assert forward_due(session, datetime.now(UTC)) == [reply_id]
    session.commit()
    assert forward_reply(reply_id).startswith("retry in 10s: consumer answered 503")
    session.expire_all()
    failed = session.get_one(InboundReply, reply_id)
    assert failed.forward_attempts == 1 and failed.forwarded_at is None
    assert failed.next_forward_at is not None and failed.next_forward_at > datetime.now(UTC)
    assert forward_due(session, datetime.now(UTC)) == []  # backing off
    assert forward_due(session, datetime.now(UTC) + timedelta(seconds=11)) == [reply_id]
    session.rollback()

    _Consumer.status = 200
    assert forward_reply(reply_id) == "forwarded"
    assert forward_reply(reply_id) == "nothing to do"
    headers, body = _Consumer.received[-1]
    assert verify(consumer_secret(sent.tenant_id), body, headers["Comms-Signature"])
    payload = json.loads(body)["reply"]
    assert payload["delivery_id"] == str(sent.delivery_id)
    assert payload["text"] == "Yes please, count me in!"
    assert not hmac.compare_digest(consumer_secret(sent.tenant_id), consumer_secret(uuid.uuid4()))


def test_replies_api_lists_only_the_tenants_own(
    sent: Sent, use_store: LocalStore, session: Session
) -> None:
    from comms.api import create_app
    from comms.tenants import create_tenant

    to = reply_address(sent.delivery_id, DOMAIN)
    reply_id = thread_message(_stored(use_store, _reply(to), [to]))
    from comms.tenants import issue_api_key

    key = issue_api_key(session, sent.tenant_id).key
    other_key = create_tenant(session, "other")[1].key
    session.commit()
    client = TestClient(create_app())
    mine = client.get("/v1/replies", headers={"Authorization": f"Bearer {key}"}).json()
    assert [r["id"] for r in mine["items"]] == [str(reply_id)]
    assert mine["items"][0]["subscriber_id"] == str(sent.subscriber_id)
    theirs = client.get("/v1/replies", headers={"Authorization": f"Bearer {other_key}"}).json()
    assert theirs["items"] == []
    missing = client.get(
        f"/v1/replies/{reply_id}", headers={"Authorization": f"Bearer {other_key}"}
    )
    assert missing.status_code == 404

    put = client.put(
        "/v1/inbound", headers={"Authorization": f"Bearer {other_key}"},
        json={"reply_domain": DOMAIN},
    )  # fmt: skip
    assert put.status_code == 422 and "already" in put.json()["detail"]


def test_listener_caps_connections_and_offers_starttls(
    sent: Sent, store: LocalStore, tls_files: tuple[Path, Path]
) -> None:
    import ssl

    from workers.listener import ReplyListener

    cert, key = tls_files
    settings = get_settings().model_copy(
        update={
            "inbound_port": free_port(), "inbound_max_connections": 1,
            "inbound_tls_cert": cert, "inbound_tls_key": key,
        }
    )  # fmt: skip
    server = ReplyListener(settings, store)
    server.start()
    try:
        with smtplib.SMTP("127.0.0.1", server.bound_port, timeout=10) as first:
            client_tls = ssl.create_default_context(cafile=str(cert))
            client_tls.check_hostname = False
            assert first.starttls(context=client_tls)[0] == 220
            first.ehlo()
            with pytest.raises(smtplib.SMTPConnectError) as second:
                smtplib.SMTP("127.0.0.1", server.bound_port, timeout=10)
            assert second.value.smtp_code == 421
            to = reply_address(sent.delivery_id, DOMAIN)
            assert first.sendmail("ann@example.org", [to], _reply(to)) == {}
        assert len(list(store.list_keys())) == 1
    finally:
        server.stop()


def test_raw_messages_can_live_in_s3(stack: Any) -> None:
    from moto.server import ThreadedMotoServer

    from comms.inbound.store import S3Store

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        import boto3

        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        s3.create_bucket(Bucket="replies")
        s3.close()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            store = S3Store("replies", "prod/", endpoint)
            key = store.put(
                b"raw bytes", Envelope(recipients=["reply+x@d.example"], mail_from=None)
            )
            raw, envelope = store.get(key)
            assert raw == b"raw bytes" and envelope.recipients == ["reply+x@d.example"]
            assert list(store.list_keys()) == [key]
            store.client.close()
    finally:
        moto.stop()


def test_spam_above_the_threshold_is_kept_but_not_threaded(
    sent: Sent, use_store: LocalStore, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from comms.settings import reset_settings

    monkeypatch.setenv("COMMS_INBOUND_TRUSTED_AUTHSERV_ID", "mx.comms.example")
    reset_settings()
    to = reply_address(sent.delivery_id, DOMAIN)
    raw = b"Authentication-Results: mx.comms.example; dkim=none\r\nX-Spam-Score: 9.1\r\n" + _reply(
        to
    )
    reply = session.get_one(InboundReply, thread_message(_stored(use_store, raw, [to])))
    assert reply.kind == "spam" and reply.spam_score == 9.1 and reply.threaded_at is None
    reset_settings()


def test_inbound_parse_cli_prints_one_json_object_per_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from comms.cli import main

    first, second = tmp_path / "a.eml", tmp_path / "b.eml"
    first.write_bytes(_reply("reply+tok1@news.acme.example"))
    second.write_bytes(b"\x00\xff not mail at all")
    result = CliRunner().invoke(main, ["inbound", "parse", "--json", str(first), str(second)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["file"] for line in lines] == [str(first), str(second)]
    assert lines[0]["text"] == "Yes please, count me in!" and lines[0]["reply_token"] == "tok1"
    assert lines[1]["auto_reply"] is False and lines[1]["bounce"] is None


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(min_size=1, max_size=4000).map(
        lambda b: b.replace(b"\r", b"").replace(b"\n.", b"\n..")  # valid on the wire
    )
)
def test_the_listener_accepts_and_stores_any_bytes(
    sent: Sent, roomy_listener: Any, store: LocalStore, body: bytes
) -> None:
    to = reply_address(sent.delivery_id, DOMAIN)
    before = len(list(store.list_keys()))
    with smtplib.SMTP("127.0.0.1", roomy_listener.bound_port, timeout=10) as client:
        client.ehlo()
        assert client.mail("ann@example.org")[0] == 250
        assert client.rcpt(to)[0] == 250
        assert client.data(body)[0] == 250
    assert len(list(store.list_keys())) == before + 1


@pytest.fixture
def roomy_listener(stack: Any, store: LocalStore) -> Iterator[Any]:
    """A listener whose per-tenant rate never gets in the way."""
    from workers.listener import ReplyListener

    settings = get_settings().model_copy(
        update={
            "inbound_port": free_port(),
            "inbound_rate_per_tenant": 1e6,
            "inbound_burst_per_tenant": 1e6,
        }
    )
    server = ReplyListener(settings, store)
    server.start()
    try:
        yield server
    finally:
        server.stop()
