"""Parsers from each provider's report format to ``IncomingEvent``.

SES event publishing (``eventType``) and SES notifications (``notificationType``)
arrive as the ``Message`` of an SNS notification; Twilio posts status callbacks
as a form; our webhook provider's receivers post JSON in our own vocabulary.
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from comms.events import EventType, IncomingEvent

# Apple Mail Privacy Protection fetches every image from Apple's network with a
# generic WebKit user agent; security scanners announce themselves.
_APPLE_PROXY_NET = ipaddress.ip_network("17.0.0.0/8")
_APPLE_PROXY_UA = re.compile(
    r"^Mozilla/5\.0 \(Macintosh; Intel Mac OS X [\d_]+\) AppleWebKit/[\d.]+ \(KHTML, like Gecko\)$"
)
_SCANNER_UA = re.compile(
    r"bot|crawler|spider|scanner|barracuda|mimecast|proofpoint|symantec|python-requests|curl|"
    r"go-http-client|headless",
    re.I,
)


class MalformedEvent(ValueError):
    """The report does not have the shape its provider documents."""


def is_machine_open(user_agent: str | None, ip: str | None) -> bool:
    """An open by a privacy proxy or a scanner rather than a person reading."""
    if user_agent and _SCANNER_UA.search(user_agent):
        return True
    try:
        from_apple = ip is not None and ipaddress.ip_address(ip) in _APPLE_PROXY_NET
    except ValueError:
        from_apple = False
    return from_apple or bool(user_agent and _APPLE_PROXY_UA.match(user_agent.strip()))


def _when(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MalformedEvent(f"bad timestamp {text!r}") from exc


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


_SES_BOUNCE = {"Permanent": EventType.BOUNCED, "Transient": EventType.SOFT_BOUNCED,
               "Undetermined": EventType.SOFT_BOUNCED}  # fmt: skip


def parse_ses(sns_message_id: str, message: str) -> list[IncomingEvent]:
    """One SES event (from an SNS Notification's Message) → our events, one per recipient."""
    try:
        body = json.loads(message)
    except json.JSONDecodeError as exc:
        raise MalformedEvent("SES message is not JSON") from exc
    if not isinstance(body, dict) or not isinstance(body.get("mail"), dict):
        raise MalformedEvent("SES message has no 'mail' object")
    kind = body.get("eventType") or body.get("notificationType")
    mail = body["mail"]
    tags = mail.get("tags") or {}
    delivery_id = _uuid((tags.get("delivery_id") or [None])[0])
    common: dict[str, Any] = {
        "delivery_id": delivery_id,
        "provider_message_id": mail.get("messageId"),
    }
    default_to = (mail.get("destination") or [None])[0]

    def one(type_: EventType, when: str | None, suffix: str = "", **kw: Any) -> IncomingEvent:
        kw.setdefault("recipient", default_to)
        return IncomingEvent(
            provider_event_id=f"sns:{sns_message_id}{suffix}", type=type_,
            occurred_at=_when(when), **common, **kw,
        )  # fmt: skip

    if kind == "Bounce":
        bounce = body.get("bounce") or {}
        type_ = _SES_BOUNCE.get(bounce.get("bounceType", ""), EventType.SOFT_BOUNCED)
        recipients = bounce.get("bouncedRecipients") or [{"emailAddress": default_to}]
        return [
            one(type_, bounce.get("timestamp"), f":{i}" if i else "",
                recipient=r.get("emailAddress"),
                data={"bounce_type": bounce.get("bounceType"),
                      "bounce_subtype": bounce.get("bounceSubType"),
                      "status": r.get("status"), "diagnostic": r.get("diagnosticCode")})
            for i, r in enumerate(recipients)
        ]  # fmt: skip
    if kind == "Complaint":
        complaint = body.get("complaint") or {}
        recipients = complaint.get("complainedRecipients") or [{"emailAddress": default_to}]
        return [
            one(EventType.COMPLAINED, complaint.get("timestamp"), f":{i}" if i else "",
                recipient=r.get("emailAddress"),
                data={"feedback_type": complaint.get("complaintFeedbackType")})
            for i, r in enumerate(recipients)
        ]  # fmt: skip
    simple = {
        "Send": (EventType.QUEUED, "mail", "timestamp"),
        "Delivery": (EventType.DELIVERED, "delivery", "timestamp"),
        "Reject": (EventType.REJECTED, "reject", None),
        "DeliveryDelay": (EventType.DELAYED, "deliveryDelay", "timestamp"),
        "Rendering Failure": (EventType.FAILED, "failure", None),
        "RenderingFailure": (EventType.FAILED, "failure", None),
        "Subscription": (EventType.UNSUBSCRIBED, "subscription", "timestamp"),
    }
    if kind in simple:
        type_, key, ts_key = simple[kind]
        detail = body.get(key) or {}
        when = detail.get(ts_key) if ts_key else mail.get("timestamp")
        return [one(type_, when or mail.get("timestamp"), data={"detail": detail})]
    if kind in ("Open", "Click"):
        detail = body.get(kind.lower()) or {}
        machine = is_machine_open(detail.get("userAgent"), detail.get("ipAddress"))
        type_ = EventType.OPENED if kind == "Open" else EventType.CLICKED
        data = {"user_agent": detail.get("userAgent"), "link": detail.get("link")}
        return [one(type_, detail.get("timestamp"), machine=machine and kind == "Open", data=data)]
    raise MalformedEvent(f"unknown SES event type {kind!r}")


_TWILIO = {
    "queued": EventType.QUEUED, "accepted": EventType.QUEUED, "sending": EventType.QUEUED,
    "sent": EventType.SENT, "delivered": EventType.DELIVERED, "read": EventType.OPENED,
    "undelivered": EventType.BOUNCED, "failed": EventType.FAILED,
}  # fmt: skip


def parse_twilio(form: Mapping[str, str], delivery_id: uuid.UUID | None) -> IncomingEvent:
    status = form.get("MessageStatus") or form.get("SmsStatus")
    sid = form.get("MessageSid") or form.get("SmsSid")
    if not status or not sid:
        raise MalformedEvent("MessageSid and MessageStatus are required")
    if status not in _TWILIO:
        raise MalformedEvent(f"unknown MessageStatus {status!r}")
    return IncomingEvent(
        provider_event_id=f"twilio:{sid}:{status}", type=_TWILIO[status],
        occurred_at=datetime.now(UTC), delivery_id=delivery_id, provider_message_id=sid,
        recipient=form.get("To"),
        data={"error_code": form.get("ErrorCode"), "status": status},
    )  # fmt: skip


def parse_custom(body: Any) -> IncomingEvent:
    """``{"event_id", "type", "delivery_id", "occurred_at"?, "recipient"?, "data"?}``."""
    if not isinstance(body, dict):
        raise MalformedEvent("the body must be a JSON object")
    missing = [k for k in ("event_id", "type", "delivery_id") if not body.get(k)]
    if missing:
        raise MalformedEvent(f"missing field(s): {', '.join(missing)}")
    try:
        type_ = EventType(body["type"])
    except ValueError:
        raise MalformedEvent(f"unknown event type {body['type']!r}") from None
    delivery_id = _uuid(body["delivery_id"])
    if delivery_id is None:
        raise MalformedEvent("delivery_id is not a UUID")
    return IncomingEvent(
        provider_event_id=f"custom:{body['event_id']}", type=type_,
        occurred_at=_when(body.get("occurred_at")), delivery_id=delivery_id,
        recipient=body.get("recipient"), machine=bool(body.get("machine", False)),
        data=data if isinstance(data := body.get("data"), dict) else {},
    )  # fmt: skip
