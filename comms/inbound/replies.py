"""Replies: which addresses we accept, threading a stored message, forwarding it on.

- :func:`check_recipient` is the RCPT-time decision of the listener: only
  ``reply+TOKEN@<a tenant's reply domain>`` with a token that verifies and
  names a delivery of that tenant. Everything else is refused before DATA.
- :func:`thread_message` is the ``comms.inbound`` task: parse the stored raw
  message, check its authentication, and write one InboundReply row (keyed by
  the stored object, so a repeated task changes nothing). A genuine reply is
  threaded to its delivery, subscriber and campaign and recorded as a
  ``replied`` event; an auto-reply is kept but not threaded; a delivery status
  notification becomes a bounce event (and so, suppression).
- :func:`forward_reply` POSTs a threaded reply to the tenant's consumer,
  signed like the webhook provider; failures back off and the sweep retries
  (:func:`forward_due`). Replies wait while a tenant has no consumer.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import literal, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from comms.db import unit_of_work
from comms.events import EventType, IncomingEvent, record
from comms.inbound.auth import authenticate
from comms.inbound.parser import ParsedReply, parse_message
from comms.inbound.store import get_store
from comms.links import BadToken, tenant_secret, verify_reply
from comms.models import Delivery, InboundReply, Tenant
from comms.settings import get_settings

log = structlog.get_logger(__name__)

#: our outbound Message-IDs are ``<delivery-uuid@message_id_domain>``
_OUR_MESSAGE_ID = re.compile(
    r"<([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})@", re.IGNORECASE
)
FORWARD_BACKOFF_MAX = timedelta(hours=1)


class Refused(Exception):
    """An SMTP refusal: ``code`` and the text after it."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.reply = f"{code} {text}"


@dataclass(frozen=True)
class Accepted:
    tenant_id: uuid.UUID
    delivery_id: uuid.UUID


def split_address(address: str) -> tuple[str, str]:
    local, _, domain = address.strip().strip("<>").rpartition("@")
    return local, domain.lower().rstrip(".")


_domains: dict[str, tuple[float, uuid.UUID | None]] = {}
DOMAIN_CACHE_SECONDS = 30.0


def tenant_for_domain(domain: str) -> uuid.UUID | None:
    """The tenant whose reply domain this is (cached briefly: RCPT is hot)."""
    cached = _domains.get(domain)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    with unit_of_work() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.reply_domain == domain))
    _domains[domain] = (time.monotonic() + DOMAIN_CACHE_SECONDS, tenant_id)
    return tenant_id


def reset_domain_cache() -> None:
    _domains.clear()


def check_recipient(address: str) -> Accepted:
    """Accept ``reply+TOKEN@domain`` for a known domain and a genuine token, else Refused."""
    local, domain = split_address(address)
    tenant_id = tenant_for_domain(domain) if domain else None
    if tenant_id is None:
        raise Refused("550", f"5.1.1 <{address}>: no such domain here (not a relay)")
    if not local.lower().startswith("reply+"):
        raise Refused("550", f"5.1.1 <{address}>: no such mailbox")
    try:
        delivery_id = verify_reply(local[len("reply+") :])
    except BadToken:
        raise Refused("550", f"5.1.1 <{address}>: unknown reply address") from None
    with unit_of_work() as session:
        owner = session.scalar(select(Delivery.tenant_id).where(Delivery.id == delivery_id))
    if owner != tenant_id:
        raise Refused("550", f"5.1.1 <{address}>: unknown reply address")
    return Accepted(tenant_id, delivery_id)


def _delivery_from_headers(
    session: Session, parsed: ParsedReply, tenant_id: uuid.UUID
) -> Delivery | None:
    """Threading when the token is gone: our Message-ID in In-Reply-To or References."""
    candidates = [parsed.in_reply_to or "", *reversed(parsed.references)]
    for header in candidates:
        match = _OUR_MESSAGE_ID.search(header)
        if match:
            delivery = session.get(Delivery, uuid.UUID(match.group(1)))
            if delivery is not None and delivery.tenant_id == tenant_id:
                return delivery
    return None


def _received_at(stamp: str, fallback: datetime) -> datetime:
    """When the listener accepted the message (from its envelope)."""
    try:
        when = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return fallback
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _kind(parsed: ParsedReply, spam_score: float | None) -> str:
    if parsed.bounce is not None:
        return "bounce"
    if parsed.auto_reply:
        return "auto_reply"
    if spam_score is not None and spam_score >= get_settings().inbound_spam_threshold:
        return "spam"
    return "reply"


def thread_message(raw_key: str) -> uuid.UUID | None:
    """Process one stored message; returns the InboundReply id (None if it fits nobody)."""
    raw, envelope = get_store().get(raw_key)
    parsed = parse_message(raw, recipients=envelope.recipients)
    peer_ip = (envelope.peer or "").rsplit(":", 1)[0].strip("[]") or None
    auth = authenticate(raw, client_ip=peer_ip, mail_from=envelope.mail_from, helo=envelope.helo)
    now = datetime.now(UTC)

    with unit_of_work() as session:
        existing = session.scalar(select(InboundReply.id).where(InboundReply.raw_key == raw_key))
        if existing is not None:
            return existing  # a repeated task: already done
        delivery: Delivery | None = None
        tenant_id: uuid.UUID | None = None
        for address in envelope.recipients:
            try:
                accepted = check_recipient(address)
            except Refused:
                continue
            delivery, tenant_id = session.get(Delivery, accepted.delivery_id), accepted.tenant_id
            break
        if tenant_id is None:
            _, domain = split_address(envelope.recipients[0]) if envelope.recipients else ("", "")
            tenant_id = tenant_for_domain(domain) if domain else None
        if tenant_id is None:
            log.warning("inbound.orphan", raw_key=raw_key)
            return None
        if delivery is None:
            delivery = _delivery_from_headers(session, parsed, tenant_id)

        kind = _kind(parsed, auth.spam_score)
        threaded = kind == "reply" and delivery is not None
        reply_id = uuid.uuid4()
        inserted = session.execute(
            insert(InboundReply)
            .values(
                id=reply_id, tenant_id=tenant_id, raw_key=raw_key,
                delivery_id=delivery.id if delivery else None,
                subscriber_id=delivery.subscriber_id if delivery else None,
                campaign_id=delivery.campaign_id if delivery else None,
                kind=kind, from_address=parsed.from_address, subject=parsed.subject,
                message_id_header=(parsed.message_id or "")[:998] or None,
                text=parsed.text, html=parsed.html,
                dkim=auth.dkim, spf=auth.spf, dmarc=auth.dmarc, spam_score=auth.spam_score,
                auto_reply=parsed.auto_reply,
                details={
                    "envelope": {
                        "recipients": envelope.recipients,
                        "mail_from": envelope.mail_from,
                    },
                    "auth_source": auth.source,
                    "auto_reply_reason": parsed.auto_reply_reason,
                    "bounce": parsed.to_json()["bounce"],
                    "in_reply_to": parsed.in_reply_to,
                },
                received_at=_received_at(envelope.received_at, now),
                threaded_at=now if threaded else None,
                next_forward_at=now if threaded else None,
            )
            .on_conflict_do_nothing(index_elements=["raw_key"])
            .returning(InboundReply.id)
        ).scalar_one_or_none()  # fmt: skip
        if inserted is None:
            return session.scalar(select(InboundReply.id).where(InboundReply.raw_key == raw_key))
        if delivery is not None:
            _record_events(session, parsed, kind, delivery, raw_key, reply_id)
    log.info("inbound.threaded", reply_id=str(reply_id), kind=kind, threaded=threaded)
    return reply_id


def _record_events(
    session: Session,
    parsed: ParsedReply,
    kind: str,
    delivery: Delivery,
    raw_key: str,
    reply_id: uuid.UUID,
) -> None:
    now = datetime.now(UTC)
    if kind == "bounce" and parsed.bounce is not None:
        bounce = parsed.bounce
        record(session, IncomingEvent(
            provider_event_id=f"inbound:{raw_key}",
            type=EventType.SOFT_BOUNCED if bounce.temporary else EventType.BOUNCED,
            occurred_at=now, delivery_id=delivery.id, recipient=delivery.recipient,
            data={"status": bounce.status, "source": "inbound dsn", "reply_id": str(reply_id)},
        ))  # fmt: skip
    elif kind in ("reply", "auto_reply"):
        record(session, IncomingEvent(
            provider_event_id=f"inbound:{raw_key}",
            type=EventType.REPLIED if kind == "reply" else EventType.AUTO_REPLIED,
            occurred_at=now, delivery_id=delivery.id, recipient=parsed.from_address,
            data={"reply_id": str(reply_id)},
        ))  # fmt: skip


# -- forwarding to the tenant's consumer -------------------------------------------
def consumer_secret(tenant_id: uuid.UUID) -> str:
    """The secret a tenant's consumer verifies our signature with (derived, never stored)."""
    return tenant_secret(b"reply-consumer", tenant_id)


def reply_view(reply: InboundReply) -> dict[str, Any]:
    return {
        "id": str(reply.id),
        "kind": reply.kind,
        "delivery_id": str(reply.delivery_id) if reply.delivery_id else None,
        "subscriber_id": str(reply.subscriber_id) if reply.subscriber_id else None,
        "campaign_id": str(reply.campaign_id) if reply.campaign_id else None,
        "from": reply.from_address,
        "subject": reply.subject,
        "text": reply.text,
        "html": reply.html,
        "auto_reply": reply.auto_reply,
        "authentication": {"dkim": reply.dkim, "spf": reply.spf, "dmarc": reply.dmarc},
        "spam_score": reply.spam_score,
        "raw_key": reply.raw_key,
        "received_at": reply.received_at.isoformat() if reply.received_at else None,
        "threaded_at": reply.threaded_at.isoformat() if reply.threaded_at else None,
        "forwarded_at": reply.forwarded_at.isoformat() if reply.forwarded_at else None,
    }


def forward_reply(reply_id: uuid.UUID, client: httpx.Client | None = None) -> str:
    """POST one threaded reply to its tenant's consumer; returns what happened."""
    from comms.providers.webhook import post_signed

    with unit_of_work() as session:
        reply = session.get(InboundReply, reply_id)
        if reply is None or reply.forwarded_at is not None or reply.threaded_at is None:
            return "nothing to do"
        tenant = session.get_one(Tenant, reply.tenant_id)
        url = tenant.reply_consumer_url
        if not url:
            reply.next_forward_at = None  # held until a consumer is configured
            return "held: no consumer configured"
        body = json.dumps({"type": "reply", "reply": reply_view(reply)}).encode()
        secret = consumer_secret(tenant.id)
        attempts = reply.forward_attempts
    error: str | None = None
    try:
        response = post_signed(
            url, body, secret, timeout=get_settings().reply_forward_timeout, client=client,
            **{"Idempotency-Key": str(reply_id)},
        )  # fmt: skip
        if not 200 <= response.status_code < 300:
            error = f"consumer answered {response.status_code}"
    except Exception as exc:  # any failure is retried later
        error = f"{type(exc).__name__}: {exc}"[:500]
    with unit_of_work() as session:
        reply = session.get_one(InboundReply, reply_id)
        if error is None:
            reply.forwarded_at = datetime.now(UTC)
            reply.next_forward_at = None
            reply.last_forward_error = None
            return "forwarded"
        backoff = min(timedelta(seconds=10 * 2**attempts), FORWARD_BACKOFF_MAX)
        reply.forward_attempts = attempts + 1
        reply.next_forward_at = datetime.now(UTC) + backoff
        reply.last_forward_error = error
    log.warning("inbound.forward_failed", reply_id=str(reply_id), error=error)
    return f"retry in {int(backoff.total_seconds())}s: {error}"


def forward_due(session: Session, now: datetime, limit: int = 500) -> list[uuid.UUID]:
    """Threaded replies whose forward is due (a failed one after its back-off)."""
    rows = session.scalars(
        select(InboundReply.id)
        .where(
            InboundReply.forwarded_at.is_(None),
            InboundReply.threaded_at.is_not(None),
            InboundReply.next_forward_at <= now,
        )
        .order_by(InboundReply.next_forward_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(rows)
    # claimed for a minute: the task settles the real next time
    for reply_id in ids:
        session.get_one(InboundReply, reply_id).next_forward_at = now + timedelta(minutes=1)
    return ids


def release_held(session: Session, tenant_id: uuid.UUID) -> int:
    """A consumer was configured: replies held for it become due now."""
    from sqlalchemy import update

    result = session.execute(
        update(InboundReply)
        .where(
            InboundReply.tenant_id == tenant_id,
            InboundReply.forwarded_at.is_(None),
            InboundReply.threaded_at.is_not(None),
        )
        .values(next_forward_at=datetime.now(UTC))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


# -- tenant settings and listing -------------------------------------------------
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class InboundSettingError(ValueError):
    pass


def set_reply_domain(session: Session, tenant_id: uuid.UUID, domain: str | None) -> None:
    """Where the tenant's replies arrive (e.g. ``news.acme.example``); None stops accepting."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise InboundSettingError(f"no tenant {tenant_id}")
    if domain is not None:
        domain = domain.strip().lower().rstrip(".")
        if not _HOSTNAME.match(domain):
            raise InboundSettingError(f"{domain!r} is not a domain name")
        taken = session.scalar(
            select(Tenant.id).where(Tenant.reply_domain == domain, Tenant.id != tenant_id)
        )
        if taken is not None:
            raise InboundSettingError(f"{domain} is already another tenant's reply domain")
    tenant.reply_domain = domain
    reset_domain_cache()


def set_consumer(session: Session, tenant_id: uuid.UUID, url: str | None) -> int:
    """The URL each threaded reply is POSTed to; returns how many held replies it releases."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise InboundSettingError(f"no tenant {tenant_id}")
    if url is not None and not re.match(r"^https?://[^\s/]+", url):
        raise InboundSettingError("the consumer URL must be an http(s) URL")
    tenant.reply_consumer_url = url
    return release_held(session, tenant_id) if url else 0


def list_replies(
    session: Session,
    tenant_id: uuid.UUID,
    *,
    kind: str | None = None,
    before: uuid.UUID | None = None,
    limit: int = 50,
) -> list[InboundReply]:
    """Newest first; ``before`` is the last id of the previous page (keyset)."""
    query = select(InboundReply).where(InboundReply.tenant_id == tenant_id)
    if kind:
        query = query.where(InboundReply.kind == kind)
    if before is not None:
        anchor = session.get(InboundReply, before)
        if anchor is not None and anchor.tenant_id == tenant_id:
            query = query.where(
                tuple_(InboundReply.received_at, InboundReply.id)
                < tuple_(literal(anchor.received_at), literal(anchor.id))
            )
    query = query.order_by(InboundReply.received_at.desc(), InboundReply.id.desc()).limit(limit)
    return list(session.scalars(query))
