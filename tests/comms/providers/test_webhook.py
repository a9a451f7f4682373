"""The webhook provider against a real local HTTP server that checks signatures."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from comms.providers import (
    ConfigurationError,
    OutboundEmail,
    OutboundSms,
    PermanentError,
    ThrottledError,
    TransientError,
)
from comms.providers.webhook import WebhookProvider, sign, verify

SECRET = "whsec-test-0042"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.headers: dict[str, str] = {}
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({
                    "body": body, "headers": dict(self.headers),
                    "valid": verify(SECRET, body, self.headers.get("Comms-Signature", "")),
                })  # fmt: skip
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                for k, v in receiver.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"id": "rcv-1"}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMMS_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")


def _email() -> OutboundEmail:
    d = uuid.uuid4()
    return OutboundEmail(
        delivery_id=d, tenant_id=uuid.uuid4(), message_id=uuid.uuid4(), sender="a@example.com",
        recipient="b@example.org", subject="Hi", text="Hello", message_id_header=f"<{d}@x>",
    )  # fmt: skip


def _provider(url: str, **extra: Any) -> WebhookProvider:
    return WebhookProvider({"url": url, "signing_secret": SECRET, **extra})


def test_posts_signed_json(receiver: Receiver, allow_loopback: None) -> None:
    outbound = _email()
    result = _provider(receiver.url).send(outbound)
    assert result.provider_message_id == "rcv-1"
    (request,) = receiver.requests
    assert request["valid"]
    body = json.loads(request["body"])
    assert body["delivery_id"] == str(outbound.delivery_id) and body["subject"] == "Hi"
    assert request["headers"]["Idempotency-Key"] == str(outbound.delivery_id)
    sms = OutboundSms(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), None, "+15551234567", "code 1")
    _provider(receiver.url).send(sms)
    assert json.loads(receiver.requests[1]["body"])["body"] == "code 1"


@pytest.mark.parametrize(
    ("status", "headers", "error"),
    [
        (500, {}, TransientError),
        (404, {}, PermanentError),
        (429, {"Retry-After": "7"}, ThrottledError),
        (302, {"Location": "http://127.0.0.1:1/"}, PermanentError),
    ],
)
def test_answers_are_classified(
    receiver: Receiver, allow_loopback: None, status: int, headers: dict[str, str],
    error: type[Exception],
) -> None:  # fmt: skip
    receiver.status, receiver.headers = status, headers
    with pytest.raises(error) as info:
        _provider(receiver.url).send(_email())
    if isinstance(info.value, ThrottledError):
        assert info.value.retry_after == 7
    assert SECRET not in str(info.value)


def test_timeout_is_transient(receiver: Receiver, allow_loopback: None) -> None:
    receiver.delay = 1.5
    with pytest.raises(TransientError, match="timed out"):
        _provider(receiver.url, timeout=0.3).send(_email())


def test_loopback_without_the_allowlist_is_refused_before_any_request(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMMS_WEBHOOK_ALLOW_NETWORKS", raising=False)
    for url in (
        receiver.url,
        receiver.url.replace("127.0.0.1", "localhost"),
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://10.0.0.1/",
    ):
        with pytest.raises(ConfigurationError, match="destination not allowed"):
            _provider(url).send(_email())  # fmt: skip
    assert receiver.requests == []


def test_a_redirect_to_loopback_is_not_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    target = Receiver()
    bouncer = Receiver()
    bouncer.status, bouncer.headers = 302, {"Location": target.url}
    monkeypatch.setenv("COMMS_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
    try:
        with pytest.raises(PermanentError, match="redirects are not followed"):
            _provider(bouncer.url).send(_email())
        assert target.requests == []
    finally:
        target.close()
        bouncer.close()


def test_signature_scheme() -> None:
    body = b'{"a": 1}'
    header = sign(SECRET, body, 1_700_000_000)
    assert verify(SECRET, body, header, now=1_700_000_010)
    assert not verify(SECRET, body + b" ", header, now=1_700_000_010)  # tampered body
    assert not verify(SECRET, body, header, now=1_700_001_000)  # stale
    assert not verify("other", body, header, now=1_700_000_010)
    assert not verify(SECRET, body, "garbage")


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="'signing_secret' is required"):
        WebhookProvider({"url": "https://example.com/"})
    with pytest.raises(ConfigurationError, match="http"):
        WebhookProvider({"url": "ftp://example.com/", "signing_secret": "x"})
