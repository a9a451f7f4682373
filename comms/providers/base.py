"""The fixed send pipeline every provider adaptor shares.

``Provider.send`` runs validate → build_payload → call → parse_result; a provider
module writes only those hooks (and optionally ``check`` and ``close``).
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from comms.models import Channel
from comms.providers.errors import ConfigurationError, ProviderError, TransientError


@dataclass(frozen=True)
class OutboundEmail:
    """One email to one recipient, as a provider sees it."""

    delivery_id: uuid.UUID
    tenant_id: uuid.UUID
    message_id: uuid.UUID
    sender: str
    recipient: str
    subject: str
    text: str | None = None
    html: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    message_id_header: str = ""


@dataclass(frozen=True)
class OutboundSms:
    delivery_id: uuid.UUID
    tenant_id: uuid.UUID
    message_id: uuid.UUID
    sender: str | None
    recipient: str
    body: str


Outbound = OutboundEmail | OutboundSms


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    detail: Mapping[str, Any] = field(default_factory=dict)


class Provider(abc.ABC):
    """A provider adaptor. Subclasses set the class attributes and fill the hooks."""

    name: ClassVar[str]
    channel: ClassVar[Channel]
    #: True when the provider itself reports opens and clicks (then comms does not add its own)
    tracks_engagement: ClassVar[bool] = False
    #: JSON Schema of the provider's settings; secret fields carry ``"secret": true``.
    settings_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = dict(settings)
        self.validate_settings()

    @classmethod
    def secret_fields(cls) -> set[str]:
        properties: dict[str, dict[str, Any]] = cls.settings_schema.get("properties", {})
        return {name for name, spec in properties.items() if spec.get("secret")}

    def validate_settings(self) -> None:
        """Check required settings are present; raise ConfigurationError naming the field."""
        for required in self.settings_schema.get("required", []):
            if self.settings.get(required) in (None, ""):
                raise ConfigurationError(f"{self.name}: setting {required!r} is required")

    # -- the pipeline -------------------------------------------------------
    def send(self, outbound: Outbound) -> SendResult:
        self.validate(outbound)
        payload = self.build_payload(outbound)
        try:
            raw = self.call(payload)
        except ProviderError:
            raise
        except OSError as exc:  # network trouble below the adaptor is worth a retry
            raise TransientError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        return self.parse_result(raw, outbound)

    def validate(self, outbound: Outbound) -> None:
        """Refuse what this provider cannot send (wrong channel, missing fields)."""
        expected = OutboundEmail if self.channel is Channel.EMAIL else OutboundSms
        if not isinstance(outbound, expected):
            raise ConfigurationError(f"{self.name} sends {self.channel.value} only")

    @abc.abstractmethod
    def build_payload(self, outbound: Outbound) -> Any: ...

    @abc.abstractmethod
    def call(self, payload: Any) -> Any: ...

    @abc.abstractmethod
    def parse_result(self, raw: Any, outbound: Outbound) -> SendResult: ...

    def check(self) -> str:
        """A harmless call that proves the settings work; returns what was checked."""
        return "nothing to check"

    def close(self) -> None:  # noqa: B027 (optional hook: most providers hold nothing)
        """Release connections held between sends."""
