"""The webhook provider: POST each delivery as signed JSON to the tenant's own endpoint.

Signature header (Stripe style): ``Comms-Signature: t=<unix seconds>,v1=<hex>`` where
``v1 = HMAC-SHA256(signing_secret, f"{t}." + body)``. Receivers verify with
``verify()``; the same scheme signs callbacks they send back to us.
The destination passes the SSRF guard in ``comms.netguard`` and redirects are
never followed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from comms.models import Channel
from comms.netguard import BlockedDestination, PinnedTransport
from comms.providers._http import HttpApiProvider
from comms.providers.base import Outbound, OutboundEmail, SendResult
from comms.providers.errors import (
    ConfigurationError,
    PermanentError,
    ThrottledError,
    TransientError,
)

SIGNATURE_HEADER = "Comms-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def signed_headers(secret: str, body: bytes, **extra: str) -> dict[str, str]:
    """The headers of a signed JSON POST (the scheme receivers verify with :func:`verify`)."""
    return {
        "User-Agent": "comms-webhook/1",
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
        **extra,
    }


def post_signed(
    url: str,
    body: bytes,
    secret: str,
    *,
    timeout: float,
    client: httpx.Client | None = None,
    **extra: str,
) -> httpx.Response:
    """POST ``body`` signed to a tenant's URL, through the SSRF guard unless ``client`` is given."""
    headers = signed_headers(secret, body, **extra)
    if client is not None:
        return client.post(url, content=body, headers=headers)
    with httpx.Client(transport=PinnedTransport(), timeout=timeout) as http:
        return http.post(url, content=body, headers=headers)


def verify(
    secret: str, body: bytes, header: str, *, tolerance: int = 300, now: float | None = None
) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


class WebhookProvider(HttpApiProvider):
    name = "webhook"
    channel = Channel.EMAIL
    default_timeout = 5.0
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["url", "signing_secret"],
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "signing_secret": {"type": "string", "secret": True},
            "timeout": {"type": "number", "default": 5},
            "rate": {"type": "number"},
            "burst": {"type": "number"},
        },
    }

    def validate_settings(self) -> None:
        super().validate_settings()
        parts = urlsplit(str(self.settings["url"]))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("webhook: setting 'url' must be an http(s) URL")

    def default_transport(self) -> httpx.BaseTransport:
        return PinnedTransport()

    def validate(self, outbound: Outbound) -> None:
        """Email and SMS both travel as JSON."""

    def build_payload(self, outbound: Outbound) -> bytes:
        body: dict[str, Any] = {
            "type": "delivery",
            "delivery_id": str(outbound.delivery_id),
            "message_id": str(outbound.message_id),
            "tenant_id": str(outbound.tenant_id),
            "to": outbound.recipient,
            "from": outbound.sender,
        }
        if isinstance(outbound, OutboundEmail):
            body.update(channel="email", subject=outbound.subject, text=outbound.text,
                        html=outbound.html, headers=dict(outbound.headers),
                        message_id_header=outbound.message_id_header)  # fmt: skip
        else:
            body.update(channel="sms", body=outbound.body)
        return json.dumps({k: v for k, v in body.items() if v is not None}).encode()

    def _post(self, body: bytes, idempotency_key: str) -> httpx.Response:
        headers = signed_headers(
            str(self.settings["signing_secret"]), body, **{"Idempotency-Key": idempotency_key}
        )
        try:
            return self.client.post(str(self.settings["url"]), content=body, headers=headers)
        except BlockedDestination as exc:
            raise ConfigurationError(f"webhook: destination not allowed: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise TransientError("webhook: timed out") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"webhook: {type(exc).__name__}") from exc

    def call(self, payload: bytes) -> httpx.Response:
        delivery_id = json.loads(payload)["delivery_id"]
        return self._post(payload, delivery_id)

    def parse_result(self, raw: httpx.Response, outbound: Outbound) -> SendResult:
        status = raw.status_code
        if 200 <= status < 300:
            try:
                answer = raw.json()
            except ValueError:
                answer = {}
            given = answer.get("id") if isinstance(answer, dict) else None
            return SendResult(provider_message_id=str(given or f"webhook-{outbound.delivery_id}"))
        reason = f"webhook answered {status}"
        if 300 <= status < 400:
            raise PermanentError(f"{reason}: redirects are not followed")
        if status == 429:
            try:
                retry_after = float(raw.headers.get("Retry-After", "1"))
            except ValueError:
                retry_after = 1.0
            raise ThrottledError(reason, retry_after=retry_after)
        if status in (408, 425) or status >= 500:
            raise TransientError(reason)
        raise PermanentError(reason)

    def check(self) -> str:
        body = json.dumps({"type": "ping"}).encode()
        response = self._post(body, f"ping-{uuid.uuid4()}")
        if not 200 <= response.status_code < 300:
            raise TransientError(f"webhook ping answered {response.status_code}")
        return f"webhook answered {response.status_code}"
