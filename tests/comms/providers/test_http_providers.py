"""Resend and Twilio through httpx.MockTransport with the APIs' documented bodies."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs

import httpx
import pytest

from comms.providers import (
    ConfigurationError,
    OutboundEmail,
    OutboundSms,
    PermanentError,
    ProviderError,
    ThrottledError,
    TransientError,
)
from comms.providers.resend import ResendProvider
from comms.providers.twilio import TwilioProvider

RESEND_KEY = "re_secret_123456"
TWILIO_TOKEN = "twilio-token-abcdef"
SID = "AC" + "1" * 32


def _email() -> OutboundEmail:
    d = uuid.uuid4()
    return OutboundEmail(
        delivery_id=d, tenant_id=uuid.uuid4(), message_id=uuid.uuid4(), sender="a@acme.example",
        recipient="b@example.org", subject="Hi", text="Hello", html="<p>Hello</p>",
        reply_to="r@acme.example", headers={"List-Id": "n"}, message_id_header=f"<{d}@x>",
    )  # fmt: skip


def _sms() -> OutboundSms:
    return OutboundSms(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), None, "+15551234567", "code 1")


def _mock(
    status: int, body: object, seen: list[httpx.Request], headers: dict[str, str] | None = None
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body, headers=headers or {})

    return httpx.MockTransport(handler)


def test_resend_request_shape() -> None:
    seen: list[httpx.Request] = []
    provider = ResendProvider({"api_key": RESEND_KEY}, transport=_mock(200, {"id": "re-1"}, seen))
    outbound = _email()
    assert provider.send(outbound).provider_message_id == "re-1"
    (request,) = seen
    assert str(request.url) == "https://api.resend.com/emails"
    assert request.headers["Authorization"] == f"Bearer {RESEND_KEY}"
    assert request.headers["Idempotency-Key"] == str(outbound.delivery_id)
    body = json.loads(request.content)
    assert body["to"] == ["b@example.org"] and body["reply_to"] == ["r@acme.example"]
    assert body["headers"]["Message-ID"] == outbound.message_id_header
    assert {"name": "delivery_id", "value": str(outbound.delivery_id)} in body["tags"]
    assert "_delivery_id" not in body


def _resend(status: int, name: str, message: str) -> dict[str, object]:
    return {"statusCode": status, "name": name, "message": message}


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (422, _resend(422, "validation_error", "Invalid `to` field."), PermanentError),
        (403, _resend(403, "invalid_api_key", "API key is invalid"), ConfigurationError),
        (401, _resend(401, "missing_api_key", "Missing API key"), ConfigurationError),
        (429, _resend(429, "rate_limit_exceeded", "Too many requests"), ThrottledError),
        (409, _resend(409, "concurrent_idempotent_requests", "busy"), TransientError),
        (500, _resend(500, "internal_server_error", "oops"), TransientError),
    ],
)
def test_resend_errors(status: int, body: dict[str, object], error: type[ProviderError]) -> None:
    provider = ResendProvider(
        {"api_key": RESEND_KEY}, transport=_mock(status, body, [], {"Retry-After": "3"})
    )
    with pytest.raises(error) as info:
        provider.send(_email())
    assert str(body["name"]) in str(info.value) and RESEND_KEY not in str(info.value)
    if isinstance(info.value, ThrottledError):
        assert info.value.retry_after == 3


def test_twilio_request_shape() -> None:
    seen: list[httpx.Request] = []
    created = {"sid": "SM" + "a" * 32, "status": "queued"}
    provider = TwilioProvider(
        {"account_sid": SID, "auth_token": TWILIO_TOKEN, "from_number": "+15550000000",
         "status_callback_url": "https://comms.example/v1/webhooks/twilio"},
        transport=_mock(201, created, seen),
    )  # fmt: skip
    sms = _sms()
    assert provider.send(sms).provider_message_id == created["sid"]
    (request,) = seen
    assert request.url.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["Authorization"].startswith("Basic ")
    form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
    assert form["To"] == "+15551234567" and form["From"] == "+15550000000"
    assert form["StatusCallback"].endswith(f"?delivery_id={sms.delivery_id}")


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [(400, 21211, PermanentError), (400, 21610, PermanentError), (401, 20003, ConfigurationError),
     (400, 21606, ConfigurationError), (429, 20429, ThrottledError), (500, 20500, TransientError),
     (400, 21617, PermanentError)],
)  # fmt: skip
def test_twilio_errors(status: int, code: int, error: type[ProviderError]) -> None:
    body = {
        "code": code,
        "message": "documented message",
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    provider = TwilioProvider(
        {"account_sid": SID, "auth_token": TWILIO_TOKEN, "from_number": "+15550000000"},
        transport=_mock(status, body, []),
    )
    with pytest.raises(error) as info:
        provider.send(_sms())
    assert str(code) in str(info.value) and TWILIO_TOKEN not in str(info.value)


def test_network_failures_are_transient() -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    for make in (
        lambda t: ResendProvider({"api_key": RESEND_KEY}, transport=t),
        lambda t: TwilioProvider({"account_sid": SID, "auth_token": TWILIO_TOKEN,
                                  "from_number": "+15550000000"}, transport=t),
    ):  # fmt: skip
        provider = make(httpx.MockTransport(boom))
        outbound = _email() if isinstance(provider, ResendProvider) else _sms()
        with pytest.raises(TransientError):
            provider.send(outbound)


def test_checks() -> None:
    resend = ResendProvider(
        {"api_key": RESEND_KEY}, transport=_mock(200, {"data": [{"id": "d"}]}, [])
    )
    assert "1 domain" in resend.check()
    twilio = TwilioProvider(
        {"account_sid": SID, "auth_token": TWILIO_TOKEN, "from_number": "+1555"},
        transport=_mock(200, {"friendly_name": "Acme", "status": "active"}, []),
    )
    assert twilio.check() == "twilio account Acme: active"
    with pytest.raises(ConfigurationError, match="from_number"):
        TwilioProvider({"account_sid": SID, "auth_token": TWILIO_TOKEN})
