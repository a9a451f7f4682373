"""The Resend provider: its HTTP email API (``POST /emails``), for tenants moving from it."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from comms.models import Channel
from comms.providers._http import HttpApiProvider
from comms.providers.base import Outbound, OutboundEmail, SendResult
from comms.providers.errors import (
    ConfigurationError,
    PermanentError,
    ProviderError,
    ThrottledError,
    TransientError,
)


class ResendProvider(HttpApiProvider):
    tracks_engagement = True  # open and click tracking of its own
    name = "resend"
    channel = Channel.EMAIL
    default_base_url = "https://api.resend.com"
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["api_key"],
        "properties": {
            "api_key": {"type": "string", "secret": True},
            "base_url": {"type": "string", "default": "https://api.resend.com"},
            "timeout": {"type": "number", "default": 10},
            "rate": {"type": "number", "default": 2},
            "burst": {"type": "number"},
        },
    }

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings['api_key']}"}

    def build_payload(self, outbound: Outbound) -> dict[str, Any]:
        assert isinstance(outbound, OutboundEmail)
        tags = [
            {"name": "delivery_id", "value": str(outbound.delivery_id)},
            {"name": "tenant_id", "value": str(outbound.tenant_id)},
            {"name": "message_id", "value": str(outbound.message_id)},
        ]
        body: dict[str, Any] = {
            "from": outbound.sender,
            "to": [outbound.recipient],
            "subject": outbound.subject,
            "headers": {"Message-ID": outbound.message_id_header, **outbound.headers},
            "tags": tags,
            "_delivery_id": str(outbound.delivery_id),
        }
        if outbound.text is not None:
            body["text"] = outbound.text
        if outbound.html is not None:
            body["html"] = outbound.html
        if outbound.reply_to:
            body["reply_to"] = [outbound.reply_to]
        return body

    def call(self, payload: dict[str, Any]) -> httpx.Response:
        delivery_id = payload.pop("_delivery_id")
        # Resend's Idempotency-Key: a retried POST for the same delivery never sends twice
        headers = {**self._auth(), "Idempotency-Key": delivery_id}
        return self.request("POST", "/emails", json=payload, headers=headers)

    def _error(self, response: httpx.Response) -> ProviderError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        name = body.get("name", "error") if isinstance(body, dict) else "error"
        message = body.get("message", "") if isinstance(body, dict) else ""
        reason = f"resend {response.status_code} {name}: {message}".strip()
        status = response.status_code
        if status == 429:
            return ThrottledError(reason, retry_after=self.retry_after(response))
        if status in (401, 403):
            return ConfigurationError(reason)
        if status == 409 or status >= 500:
            return TransientError(reason)
        return PermanentError(reason)

    def parse_result(self, raw: httpx.Response, outbound: Outbound) -> SendResult:
        if raw.status_code != 200:
            raise self._error(raw)
        return SendResult(provider_message_id=str(raw.json()["id"]))

    def check(self) -> str:
        response = self.request("GET", "/domains", headers=self._auth())
        if response.status_code != 200:
            raise self._error(response)
        domains = response.json().get("data", [])
        return f"resend API key works: {len(domains)} domain(s)"
