"""Delivering one Delivery: claim it, call its provider, settle the outcome.

The claim (pending → sending, with a lease) commits before the provider is
called, and the provider is called outside any transaction; the result is then
settled by another compare-and-set. A worker killed mid-send leaves the row in
``sending``; the recovery sweep returns it to ``pending`` once the lease runs out.
"""

from __future__ import annotations

import enum
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from comms import contract
from comms.crypto import DecryptionError
from comms.db import after_commit, unit_of_work
from comms.deliveries import record_event, transition
from comms.dispatch import publish
from comms.links import UnsubscribeToken, sign_unsubscribe, unsubscribe_url
from comms.models import (
    Campaign,
    CampaignStatus,
    Channel,
    Delivery,
    DeliveryState,
    Message,
    ProviderConfig,
    Subscriber,
)
from comms.provider_configs import build_provider, no_provider_error, resolve_providers
from comms.providers import (
    ConfigurationError,
    Outbound,
    OutboundEmail,
    OutboundSms,
    PermanentError,
    Provider,
    ProviderError,
    ThrottledError,
    TransientError,
    provider_class,
)
from comms.ratelimit import RateLimiter
from comms.rendering import render
from comms.settings import get_settings
from comms.suppression import suppression_reason

log = structlog.get_logger(__name__)
S = DeliveryState

#: Retries shorter than this go back to the broker with a countdown; longer ones
#: are stored as ``scheduled`` and published by the due-sweeper (no long ETAs in Redis).
MAX_BROKER_COUNTDOWN = 60.0


class Outcome(enum.StrEnum):
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    RETRY = "retry"
    DEFERRED = "deferred"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class DeliverResult:
    outcome: Outcome
    detail: str = ""
    retry_in: float | None = None


def now_utc() -> datetime:
    return datetime.now(UTC)


def retry_delay(attempt: int, *, floor: float = 0.0) -> float:
    """Exponential back-off with jitter: half fixed, half random, capped."""
    settings = get_settings()
    ceiling = min(
        settings.retry_max_seconds, settings.retry_base_seconds * 2 ** max(attempt - 1, 0)
    )
    return float(max(floor, ceiling / 2 + random.uniform(0, ceiling / 2)))


def message_id_header(delivery_id: uuid.UUID) -> str:
    return f"<{delivery_id}@{get_settings().message_id_domain}>"


def build_outbound(session: Session, delivery: Delivery, message: Message) -> Outbound:
    content: dict[str, Any] = message.content
    if message.channel is Channel.SMS:
        return OutboundSms(
            delivery_id=delivery.id,
            tenant_id=delivery.tenant_id,
            message_id=message.id,
            sender=content.get("from"),
            recipient=delivery.recipient,
            body=content["body"],
        )
    subject, text, html = content["subject"], content.get("text"), content.get("html")
    headers = dict(content.get("headers") or {})
    if delivery.subscriber_id is not None and delivery.campaign_id is not None:
        token = sign_unsubscribe(
            UnsubscribeToken(delivery.tenant_id, delivery.subscriber_id, delivery.campaign_id)
        )
        link = unsubscribe_url(token)
        domain = get_settings().message_id_domain
        # RFC 2369 + RFC 8058: one-click for Gmail/Yahoo bulk-sender rules
        headers["List-Unsubscribe"] = (
            f"<{link}>, <mailto:unsubscribe@{domain}?subject=unsubscribe-{token}>"
        )
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        subscriber = session.get(Subscriber, delivery.subscriber_id)
        intro = session.scalar(
            select(Campaign.fallback_intro).where(Campaign.id == delivery.campaign_id)
        )
        values = {
            **(subscriber.fields if subscriber else {}),
            "email": delivery.recipient,
            # personalised intros are a later feature; the campaign's fallback stands in
            "ai_intro": intro or "",
            "unsubscribe_url": link,
        }
        subject = render(subject, values)
        text = render(text, values) if text else None
        html = render(html, values, escape_html=True) if html else None
        # a visible link too, when the template did not place one
        if text is not None and link not in text:
            text += f"\n\n--\nUnsubscribe: {link}\n"
        if html is not None and link not in html:
            html += f'<p style="font-size:12px"><a href="{link}">Unsubscribe</a></p>'

    return OutboundEmail(
        delivery_id=delivery.id,
        tenant_id=delivery.tenant_id,
        message_id=message.id,
        sender=content["from"],
        recipient=delivery.recipient,
        subject=subject,
        text=text,
        html=html,
        reply_to=content.get("reply_to"),
        headers=headers,
        message_id_header=message_id_header(delivery.id),
    )


@dataclass(frozen=True)
class Claim:
    """What a claimed send needs: the provider to call and where it sits in the failover list."""

    config_id: uuid.UUID
    provider: Provider
    outbound: Outbound
    providers_in_list: int
    rate: tuple[float, float] | None


def rate_of(config: ProviderConfig) -> tuple[float, float] | None:
    """(rate per second, burst) for a provider config, or None when it is unlimited."""
    schema = provider_class(config.kind).settings_schema.get("properties", {})
    rate = config.settings.get("rate", schema.get("rate", {}).get("default"))
    if not rate:
        return None
    burst = config.settings.get("burst") or max(1.0, float(rate))
    return float(rate), float(burst)


def _claim(delivery_id: uuid.UUID) -> Claim | DeliverResult:
    settings = get_settings()
    with unit_of_work() as session:
        claimed = transition(
            session,
            delivery_id,
            [S.PENDING],
            S.SENDING,
            attempts=Delivery.attempts + 1,
            lease_until=now_utc() + timedelta(seconds=settings.send_lease_seconds),
        )
        if not claimed:
            return DeliverResult(Outcome.SKIPPED, "not pending (already claimed or settled)")
        delivery = session.get_one(Delivery, delivery_id)
        message = session.get_one(Message, delivery.message_id)

        held = _held_by_campaign(session, delivery)
        if held is not None:
            return held

        reason = suppression_reason(
            session, delivery.tenant_id, delivery.recipient,
            transactional=delivery.campaign_id is None,
        )  # fmt: skip
        if reason is not None:
            transition(session, delivery_id, [S.SENDING], S.SUPPRESSED, last_error=reason.value)
            record_event(session, delivery, "suppressed", {"reason": reason.value})
            return DeliverResult(Outcome.SUPPRESSED, reason.value)

        configs = resolve_providers(session, delivery.tenant_id, message.channel)
        try:
            if not configs:
                raise no_provider_error(delivery.tenant_id, message.channel)
            config = configs[delivery.failover_index % len(configs)]
            provider = build_provider(config)
        except (ConfigurationError, DecryptionError) as exc:
            detail = f"configuration: {exc}"
            transition(session, delivery_id, [S.SENDING], S.FAILED, last_error=detail)
            record_event(session, delivery, "failed", {"reason": detail})
            return DeliverResult(Outcome.FAILED, detail)

        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id)
            .values(provider_config_id=config.id, provider=config.kind)
        )
        return Claim(
            config_id=config.id,
            provider=provider,
            outbound=build_outbound(session, delivery, message),
            providers_in_list=len(configs),
            rate=rate_of(config),
        )


def _held_by_campaign(session: Session, delivery: Delivery) -> DeliverResult | None:
    """A paused campaign's send waits as scheduled (due now); a cancelled one's is dropped."""
    if delivery.campaign_id is None:
        return None
    status = session.scalar(select(Campaign.status).where(Campaign.id == delivery.campaign_id))
    if status is CampaignStatus.PAUSED:
        transition(
            session, delivery.id, [S.SENDING], S.SCHEDULED,
            attempts=Delivery.attempts - 1, lease_until=None, due_at=now_utc(),
        )  # fmt: skip
        return DeliverResult(Outcome.DEFERRED, "campaign paused")
    if status is CampaignStatus.CANCELLED:
        transition(session, delivery.id, [S.SENDING], S.CANCELLED, last_error="cancelled")
        return DeliverResult(Outcome.SKIPPED, "campaign cancelled")
    return None


def _defer(delivery_id: uuid.UUID, wait: float) -> DeliverResult:
    """No token yet: hand the claim back (not counted as an attempt) and come back later."""
    countdown = min(wait, MAX_BROKER_COUNTDOWN)
    with unit_of_work() as session:
        if transition(
            session, delivery_id, [S.SENDING], S.PENDING,
            attempts=Delivery.attempts - 1, lease_until=None,
        ):  # fmt: skip
            after_commit(session, lambda: publish(contract.DELIVER, [str(delivery_id)], countdown))
    return DeliverResult(Outcome.DEFERRED, "rate limited", retry_in=countdown)


def deliver(delivery_id: uuid.UUID) -> DeliverResult:
    """Send one delivery if it is still pending; safe to call any number of times."""
    structlog.contextvars.bind_contextvars(delivery_id=str(delivery_id))
    claim = _claim(delivery_id)
    if isinstance(claim, DeliverResult):
        log.info("deliver.settled", outcome=claim.outcome.value, detail=claim.detail)
        return claim
    outbound = claim.outbound
    structlog.contextvars.bind_contextvars(
        tenant_id=str(outbound.tenant_id), message_id=str(outbound.message_id)
    )
    if claim.rate is not None:
        grant = RateLimiter().acquire(claim.config_id, *claim.rate)
        if grant.wait > 0:
            return _defer(delivery_id, grant.wait)
    try:
        result = claim.provider.send(outbound)
    except ProviderError as exc:
        if isinstance(exc, ThrottledError):
            RateLimiter().slow_down(claim.config_id)
        return _settle_error(delivery_id, exc, claim)

    with unit_of_work() as session:
        moved = transition(
            session,
            delivery_id,
            [S.SENDING],
            S.SENT,
            provider_message_id=result.provider_message_id,
            sent_at=now_utc(),
            lease_until=None,
            last_error=None,
        )
        if moved:
            data = {
                "provider": claim.provider.name,
                "provider_message_id": result.provider_message_id,
            }
            record_event(session, session.get_one(Delivery, delivery_id), "sent", data)
    if not moved:
        log.warning("deliver.settled_late", detail="lease expired before the send was recorded")
    log.info("deliver.sent", provider=claim.provider.name)
    return DeliverResult(Outcome.SENT, result.provider_message_id)


def _settle_error(delivery_id: uuid.UUID, exc: ProviderError, claim: Claim) -> DeliverResult:
    settings = get_settings()
    with unit_of_work() as session:
        delivery = session.get_one(Delivery, delivery_id)
        if isinstance(exc, TransientError) and delivery.attempts < settings.max_send_attempts:
            next_index = delivery.failover_index + 1
            failing_over = claim.providers_in_list > 1
            if failing_over and next_index % claim.providers_in_list != 0:
                delay = 0.0  # the next provider in the list gets it now
            else:
                floor = exc.retry_after if isinstance(exc, ThrottledError) else 0.0
                delay = retry_delay(delivery.attempts, floor=floor)
            values: dict[str, Any] = {"last_error": exc.reason, "lease_until": None}
            if failing_over:
                values["failover_index"] = next_index
                record_event(
                    session, delivery, "failover",
                    {"from_provider": str(claim.config_id), "reason": exc.reason},
                )  # fmt: skip
            if delay <= MAX_BROKER_COUNTDOWN:
                if transition(session, delivery_id, [S.SENDING], S.PENDING, **values):
                    after_commit(
                        session, lambda: publish(contract.DELIVER, [str(delivery_id)], delay)
                    )
            else:
                values["due_at"] = now_utc() + timedelta(seconds=delay)
                transition(session, delivery_id, [S.SENDING], S.SCHEDULED, **values)
            log.warning("deliver.retry", reason=exc.reason, retry_in=round(delay, 2))
            return DeliverResult(Outcome.RETRY, exc.reason, retry_in=delay)

        kind = "permanent" if isinstance(exc, PermanentError) else type(exc).__name__
        if isinstance(exc, TransientError):
            detail = f"gave up after {delivery.attempts} attempts: {exc.reason}"
        elif isinstance(exc, ConfigurationError):
            detail = f"configuration: {exc.reason}"
        else:
            detail = exc.reason
        if transition(
            session, delivery_id, [S.SENDING], S.FAILED, last_error=detail, lease_until=None
        ):
            record_event(session, delivery, "failed", {"reason": detail, "kind": kind})
        log.warning("deliver.failed", reason=detail)
        return DeliverResult(Outcome.FAILED, detail)
