"""Delivery commands: the JSON a producer sends, validated the same way at every door.

``EmailContent``/``SmsContent`` are what the HTTP API accepts (the tenant comes
from the API key); ``EmailCommand``/``SmsCommand`` add ``tenant_id`` and are the
JSON argument of the ``comms.send_email``/``comms.send_sms`` tasks.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "CommandError",
    "EmailCommand",
    "EmailContent",
    "SmsCommand",
    "SmsContent",
    "field_errors",
    "parse_command",
]

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 field name: printable, no colon
_RESERVED_HEADERS = {
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "reply-to",
    "content-type", "content-transfer-encoding", "mime-version",
}  # fmt: skip
E164 = Annotated[str, StringConstraints(pattern=r"^\+[1-9]\d{6,14}$")]
IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MAX_RECIPIENTS = 1000
_M = TypeVar("_M", bound=BaseModel)


class CommandError(ValueError):
    """A command failed validation; ``errors`` name each bad field."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        super().__init__(f"invalid command: {summary}")


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": "to.0", "message": "..."}`` (no input values echoed)."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in err["loc"] if part != "body") or "(body)"
        out.append({"field": loc, "message": err["msg"]})
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, str_strip_whitespace=True)


class EmailContent(_Strict):
    sender: EmailStr = Field(alias="from", description="The From address")
    to: list[EmailStr] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    subject: str = Field(min_length=1, max_length=998)
    text: str | None = Field(None, max_length=1_000_000)
    html: str | None = Field(None, max_length=2_000_000)
    reply_to: EmailStr | None = None
    headers: dict[str, str] = Field(default_factory=dict, max_length=50)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise ValueError("must be a single line")
        return value

    @field_validator("headers")
    @classmethod
    def _safe_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"{name!r} is set by comms and cannot be overridden")
            if "\n" in header_value or "\r" in header_value:
                raise ValueError(f"header {name!r} must be a single line")
        return value

    @model_validator(mode="after")
    def _has_body(self) -> EmailContent:
        if not self.text and not self.html:
            raise ValueError("one of 'text' or 'html' is required")
        return self

    def recipients(self) -> list[str]:
        """Recipients in order, each once (addresses compared case-insensitively)."""
        seen: dict[str, str] = {}
        for address in self.to:
            seen.setdefault(address.lower(), address)
        return list(seen.values())

    def stored(self) -> dict[str, Any]:
        return self.model_dump(
            by_alias=True, exclude={"to", "tenant_id", "idempotency_key"}, mode="json"
        )


class SmsContent(_Strict):
    sender: str | None = Field(None, alias="from", max_length=32)
    to: list[E164] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    body: str = Field(min_length=1, max_length=1600)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)

    def recipients(self) -> list[str]:
        return list(dict.fromkeys(self.to))

    def stored(self) -> dict[str, Any]:
        return self.model_dump(
            by_alias=True, exclude={"to", "tenant_id", "idempotency_key"}, mode="json"
        )


class EmailCommand(EmailContent):
    tenant_id: uuid.UUID
    idempotency_key: IdempotencyKey | None = None


class SmsCommand(SmsContent):
    tenant_id: uuid.UUID
    idempotency_key: IdempotencyKey | None = None


def parse_command(model: type[_M], data: Any) -> _M:
    """Validate ``data`` as ``model`` or raise CommandError naming the fields."""
    if not isinstance(data, dict):
        raise CommandError([{"field": "(body)", "message": "must be a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CommandError(field_errors(exc)) from None
