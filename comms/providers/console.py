"""The console provider: logs each send instead of delivering it (development)."""

from __future__ import annotations

from typing import Any, ClassVar

import structlog

from comms.models import Channel
from comms.providers.base import Outbound, OutboundEmail, Provider, SendResult

log = structlog.get_logger(__name__)


class ConsoleProvider(Provider):
    """Accepts email and SMS and writes a log line for each; never fails."""

    name = "console"
    channel = Channel.EMAIL
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"channel": {"type": "string", "enum": ["email", "sms"]}},
    }

    def validate(self, outbound: Outbound) -> None:
        """Both channels are fine for the console."""

    def build_payload(self, outbound: Outbound) -> dict[str, Any]:
        if isinstance(outbound, OutboundEmail):
            return {
                "to": outbound.recipient,
                "subject": outbound.subject,
                "id": outbound.delivery_id,
            }
        return {"to": outbound.recipient, "body": outbound.body, "id": outbound.delivery_id}

    def call(self, payload: dict[str, Any]) -> dict[str, Any]:
        log.info("console.send", to=payload["to"], subject=payload.get("subject"))
        return payload

    def parse_result(self, raw: dict[str, Any], outbound: Outbound) -> SendResult:
        return SendResult(provider_message_id=f"console-{raw['id']}")
