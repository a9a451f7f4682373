"""The Twilio provider: SMS through its REST API, with a status callback per message."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx

from comms.models import Channel
from comms.providers._http import HttpApiProvider
from comms.providers.base import Outbound, OutboundSms, SendResult
from comms.providers.errors import (
    ConfigurationError,
    PermanentError,
    ProviderError,
    ThrottledError,
    TransientError,
)

# Twilio error codes (https://www.twilio.com/docs/api/errors) by what they mean for us
_CONFIGURATION = {20003, 20404, 21212, 21606, 21608, 21659}
_PERMANENT = {21211, 21408, 21610, 21614, 21617, 30003, 30005, 30006}
_THROTTLED = {20429, 14107}


class TwilioProvider(HttpApiProvider):
    name = "twilio"
    channel = Channel.SMS
    default_base_url = "https://api.twilio.com"
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "required": ["account_sid", "auth_token"],
        "properties": {
            "account_sid": {"type": "string"},
            "auth_token": {"type": "string", "secret": True},
            "from_number": {"type": "string", "description": "E.164 sender"},
            "messaging_service_sid": {"type": "string"},
            "status_callback_url": {
                "type": "string",
                "description": "Your public URL of /v1/webhooks/twilio",
            },
            "base_url": {"type": "string", "default": "https://api.twilio.com"},
            "timeout": {"type": "number", "default": 10},
            "rate": {"type": "number"},
            "burst": {"type": "number"},
        },
    }

    def validate_settings(self) -> None:
        super().validate_settings()
        if not self.settings.get("from_number") and not self.settings.get("messaging_service_sid"):
            raise ConfigurationError("twilio: set 'from_number' or 'messaging_service_sid'")

    @property
    def _auth(self) -> tuple[str, str]:
        return str(self.settings["account_sid"]), str(self.settings["auth_token"])

    def build_payload(self, outbound: Outbound) -> dict[str, str]:
        assert isinstance(outbound, OutboundSms)
        form = {"To": outbound.recipient, "Body": outbound.body}
        if self.settings.get("messaging_service_sid"):
            form["MessagingServiceSid"] = str(self.settings["messaging_service_sid"])
        else:
            form["From"] = str(outbound.sender or self.settings["from_number"])
        callback = self.settings.get("status_callback_url")
        if callback:
            sep = "&" if "?" in str(callback) else "?"
            form["StatusCallback"] = (
                f"{callback}{sep}{urlencode({'delivery_id': str(outbound.delivery_id)})}"
            )
        return form

    def call(self, payload: dict[str, str]) -> httpx.Response:
        sid = self._auth[0]
        return self.request(
            "POST", f"/2010-04-01/Accounts/{sid}/Messages.json", data=payload, auth=self._auth
        )

    def _error(self, response: httpx.Response) -> ProviderError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        code = body.get("code") if isinstance(body, dict) else None
        message = body.get("message", "") if isinstance(body, dict) else ""
        reason = f"twilio {code or response.status_code}: {message}".strip()
        if response.status_code == 429 or code in _THROTTLED:
            return ThrottledError(reason, retry_after=self.retry_after(response))
        if response.status_code == 401 or code in _CONFIGURATION:
            return ConfigurationError(reason)
        if code in _PERMANENT:
            return PermanentError(reason)
        if response.status_code >= 500:
            return TransientError(reason)
        return PermanentError(reason)

    def parse_result(self, raw: httpx.Response, outbound: Outbound) -> SendResult:
        if raw.status_code not in (200, 201):
            raise self._error(raw)
        body = raw.json()
        return SendResult(
            provider_message_id=str(body["sid"]), detail={"status": body.get("status")}
        )

    def check(self) -> str:
        sid = self._auth[0]
        response = self.request("GET", f"/2010-04-01/Accounts/{sid}.json", auth=self._auth)
        if response.status_code != 200:
            raise self._error(response)
        body = response.json()
        return f"twilio account {body.get('friendly_name')}: {body.get('status')}"
