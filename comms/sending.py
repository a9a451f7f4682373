"""Delivering one Delivery: claim it, call its provider, settle the outcome.

The claim (pending → sending, with a lease) commits before the provider is
called, and the provider is called outside any transaction; the result is then
settled by another compare-and-set. A worker killed mid-send leaves the row in
``sending``; the recovery sweep returns it to ``pending`` once the lease runs out.
"""

from __future__ import annotations

import enum
import functools
import random
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, String, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

from comms import contract
from comms.crypto import DecryptionError
from comms.db import after_commit, unit_of_work
from comms.deliveries import record_event, transition, transition_with_event
from comms.dispatch import publish
from comms.links import UnsubscribeToken, reply_address, sign_unsubscribe, unsubscribe_url
from comms.models import (
    Campaign,
    CampaignStatus,
    Channel,
    Delivery,
    DeliveryState,
    Message,
    ProviderConfig,
    Subscriber,
    SuppressionEntry,
    Tenant,
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
from comms.suppression import strongest_reason
from comms.tracking import instrument_html

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


@dataclass(frozen=True)
class ClaimedRow:
    """The columns of a delivery the send needs, read by the claiming UPDATE itself."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    message_id: uuid.UUID
    recipient: str
    campaign_id: uuid.UUID | None
    subscriber_id: uuid.UUID | None
    failover_index: int
    attempts: int


_message_cache: OrderedDict[uuid.UUID, tuple[Channel, dict[str, Any]]] = OrderedDict()
_provider_cache: dict[
    tuple[uuid.UUID, Channel], tuple[float, list[tuple[ProviderConfig, Provider]]]
] = {}
#: how long a worker reuses a tenant's resolved providers (a change applies within this)
PROVIDER_CACHE_SECONDS = 5.0


def reset_caches() -> None:
    _message_cache.clear()
    for _, entries in _provider_cache.values():
        for _, provider in entries:
            provider.close()
    _provider_cache.clear()


def _message(session: Session, message_id: uuid.UUID) -> tuple[Channel, dict[str, Any]]:
    """A message's channel and content; immutable, so cached per worker process."""
    cached = _message_cache.get(message_id)
    if cached is None:
        row = session.execute(
            select(Message.channel, Message.content).where(Message.id == message_id)
        ).one()
        cached = (row.channel, row.content)
        _message_cache[message_id] = cached
        if len(_message_cache) > 512:
            _message_cache.popitem(last=False)
    return cached


def _providers(
    session: Session, tenant_id: uuid.UUID, channel: Channel
) -> list[tuple[ProviderConfig, Provider]]:
    """The tenant's failover list with built providers, reused for a few seconds."""
    key = (tenant_id, channel)
    cached = _provider_cache.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    configs = resolve_providers(session, tenant_id, channel)
    for config in configs:
        session.expunge(config)
    entries = [(config, build_provider(config)) for config in configs]
    _provider_cache[key] = (time.monotonic() + PROVIDER_CACHE_SECONDS, entries)
    return entries


def build_outbound(
    session: Session,
    row: ClaimedRow,
    channel: Channel,
    content: dict[str, Any],
    intro: str | None = None,
    *,
    fields: dict[str, Any] | None = None,
    reply_domain: str | None = None,
    track: bool = False,
) -> Outbound:
    """The provider-neutral message for one delivery.

    ``fields`` are the subscriber's merge fields when the caller already read
    them; ``reply_domain`` the tenant's, so that replies to campaign mail come
    back to ``reply+TOKEN@reply_domain`` and are threaded to this delivery;
    ``track`` adds the open pixel and click redirects to the HTML part.
    """
    reply_to = content.get("reply_to")
    if channel is Channel.SMS:
        return OutboundSms(
            delivery_id=row.id,
            tenant_id=row.tenant_id,
            message_id=row.message_id,
            sender=content.get("from"),
            recipient=row.recipient,
            body=content["body"],
        )
    subject, text, html = content["subject"], content.get("text"), content.get("html")
    headers = dict(content.get("headers") or {})
    if row.subscriber_id is not None and row.campaign_id is not None:
        token = sign_unsubscribe(
            UnsubscribeToken(row.tenant_id, row.subscriber_id, row.campaign_id)
        )
        link = unsubscribe_url(token)
        domain = get_settings().message_id_domain
        # RFC 2369 + RFC 8058: one-click for Gmail/Yahoo bulk-sender rules
        headers["List-Unsubscribe"] = (
            f"<{link}>, <mailto:unsubscribe@{domain}?subject=unsubscribe-{token}>"
        )
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if reply_domain:
            reply_to = reply_address(row.id, reply_domain)
        if fields is None:
            fields = session.scalar(
                select(Subscriber.fields).where(Subscriber.id == row.subscriber_id)
            )
        values = {
            **(fields or {}),
            "email": row.recipient,
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
        if track and html is not None:
            base = get_settings().public_base_url
            html = instrument_html(html, row.id, base, keep=frozenset({link}))

    return OutboundEmail(
        delivery_id=row.id,
        tenant_id=row.tenant_id,
        message_id=row.message_id,
        sender=content["from"],
        recipient=row.recipient,
        subject=subject,
        text=text,
        html=html,
        reply_to=reply_to,
        headers=headers,
        message_id_header=message_id_header(row.id),
    )


@dataclass(frozen=True)
class Claim:
    """What a claimed send needs: the provider to call and where it sits in the failover list."""

    row: ClaimedRow
    config_id: uuid.UUID
    provider_kind: str
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


@functools.cache
def _claim_statement() -> Select[Any]:
    """One round trip: claim the row and read everything the send needs with it.

    A data-modifying CTE runs exactly once and on its own is atomic, so the claim
    keeps its compare-and-set meaning; the campaign, the subscriber's merge fields
    and any suppression reasons are joined to the claimed row in the same statement.
    Built once (parameters ``delivery_id`` and ``lease_until``) and reused.
    """
    columns = Delivery.__table__.c
    claimed = (
        update(Delivery)
        .where(
            Delivery.id == bindparam("delivery_id", type_=columns.id.type),
            Delivery.state == S.PENDING,
        )
        .values(
            state=S.SENDING,
            attempts=Delivery.attempts + 1,
            updated_at=func.now(),
            lease_until=bindparam("lease_until", type_=columns.lease_until.type),
        )
        .returning(
            Delivery.id, Delivery.tenant_id, Delivery.message_id, Delivery.recipient,
            Delivery.campaign_id, Delivery.subscriber_id, Delivery.failover_index,
            Delivery.attempts,
        )
        .cte("claimed")
    )  # fmt: skip
    reasons = (
        select(func.array_agg(SuppressionEntry.reason.cast(String)))
        .where(
            SuppressionEntry.address == func.lower(claimed.c.recipient),
            or_(
                SuppressionEntry.tenant_id == claimed.c.tenant_id,
                SuppressionEntry.tenant_id.is_(None),
            ),
        )
        .scalar_subquery()
    )
    return select(
        claimed,
        Campaign.status.label("campaign_status"),
        Campaign.fallback_intro,
        Campaign.tracking.label("campaign_tracking"),
        Subscriber.fields.label("subscriber_fields"),
        reasons.label("suppressed_for"),
        Tenant.reply_domain,
    ).select_from(
        claimed.join(Tenant, Tenant.id == claimed.c.tenant_id)
        .outerjoin(Campaign, Campaign.id == claimed.c.campaign_id)
        .outerjoin(Subscriber, Subscriber.id == claimed.c.subscriber_id)
    )


def _claim(delivery_id: uuid.UUID) -> Claim | DeliverResult:
    settings = get_settings()
    with unit_of_work() as session:
        lease_until = now_utc() + timedelta(seconds=settings.send_lease_seconds)
        found = session.execute(
            _claim_statement(), {"delivery_id": delivery_id, "lease_until": lease_until}
        ).first()
        if found is None:
            return DeliverResult(Outcome.SKIPPED, "not pending (already claimed or settled)")
        row = ClaimedRow(
            id=found.id,
            tenant_id=found.tenant_id,
            message_id=found.message_id,
            recipient=found.recipient,
            campaign_id=found.campaign_id,
            subscriber_id=found.subscriber_id,
            failover_index=found.failover_index,
            attempts=found.attempts,
        )
        channel, content = _message(session, row.message_id)

        intro = None
        if row.campaign_id is not None:
            intro = found.fallback_intro
            held = _held_by_campaign(session, row, found.campaign_status)
            if held is not None:
                return held

        reason = strongest_reason(found.suppressed_for or [], transactional=row.campaign_id is None)
        if reason is not None:
            transition(session, row.id, [S.SENDING], S.SUPPRESSED, last_error=reason.value)
            record_event(session, row.tenant_id, row.id, "suppressed", {"reason": reason.value})
            return DeliverResult(Outcome.SUPPRESSED, reason.value)

        try:
            entries = _providers(session, row.tenant_id, channel)
            if not entries:
                raise no_provider_error(row.tenant_id, channel)
            config, provider = entries[row.failover_index % len(entries)]
        except (ConfigurationError, DecryptionError) as exc:
            detail = f"configuration: {exc}"
            transition(session, row.id, [S.SENDING], S.FAILED, last_error=detail)
            record_event(session, row.tenant_id, row.id, "failed", {"reason": detail})
            return DeliverResult(Outcome.FAILED, detail)

        return Claim(
            row=row,
            config_id=config.id,
            provider_kind=config.kind,
            provider=provider,
            outbound=build_outbound(
                session,
                row,
                channel,
                content,
                intro,
                fields=found.subscriber_fields,
                reply_domain=found.reply_domain,
                track=bool(found.campaign_tracking) and not provider.tracks_engagement,
            ),
            providers_in_list=len(entries),
            rate=rate_of(config),
        )


def _held_by_campaign(
    session: Session, row: ClaimedRow, status: CampaignStatus
) -> DeliverResult | None:
    """A paused campaign's send waits as scheduled (due now); a cancelled one's is dropped."""
    if status is CampaignStatus.PAUSED:
        transition(
            session, row.id, [S.SENDING], S.SCHEDULED,
            attempts=Delivery.attempts - 1, lease_until=None, due_at=now_utc(),
        )  # fmt: skip
        return DeliverResult(Outcome.DEFERRED, "campaign paused")
    if status is CampaignStatus.CANCELLED:
        transition(session, row.id, [S.SENDING], S.CANCELLED, last_error="cancelled")
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
        return _settle_error(claim, exc)

    with unit_of_work() as session:
        moved = transition_with_event(
            session,
            delivery_id,
            [S.SENDING],
            S.SENT,
            "sent",
            {"provider": claim.provider.name, "provider_message_id": result.provider_message_id},
            provider_message_id=result.provider_message_id,
            provider_config_id=claim.config_id,
            provider=claim.provider_kind,
            sent_at=now_utc(),
            lease_until=None,
            last_error=None,
        )
    if not moved:
        log.warning("deliver.settled_late", detail="lease expired before the send was recorded")
    log.info("deliver.sent", provider=claim.provider.name)
    return DeliverResult(Outcome.SENT, result.provider_message_id)


def _settle_error(claim: Claim, exc: ProviderError) -> DeliverResult:
    settings = get_settings()
    row = claim.row
    tried = {"provider_config_id": claim.config_id, "provider": claim.provider_kind}
    with unit_of_work() as session:
        if isinstance(exc, TransientError) and row.attempts < settings.max_send_attempts:
            next_index = row.failover_index + 1
            failing_over = claim.providers_in_list > 1
            if failing_over and next_index % claim.providers_in_list != 0:
                delay = 0.0  # the next provider in the list gets it now
            else:
                floor = exc.retry_after if isinstance(exc, ThrottledError) else 0.0
                delay = retry_delay(row.attempts, floor=floor)
            values: dict[str, Any] = {"last_error": exc.reason, "lease_until": None, **tried}
            if failing_over:
                values["failover_index"] = next_index
                record_event(
                    session, row.tenant_id, row.id, "failover",
                    {"from_provider": str(claim.config_id), "reason": exc.reason},
                )  # fmt: skip
            if delay <= MAX_BROKER_COUNTDOWN:
                if transition(session, row.id, [S.SENDING], S.PENDING, **values):
                    after_commit(session, lambda: publish(contract.DELIVER, [str(row.id)], delay))
            else:
                values["due_at"] = now_utc() + timedelta(seconds=delay)
                transition(session, row.id, [S.SENDING], S.SCHEDULED, **values)
            log.warning("deliver.retry", reason=exc.reason, retry_in=round(delay, 2))
            return DeliverResult(Outcome.RETRY, exc.reason, retry_in=delay)

        kind = "permanent" if isinstance(exc, PermanentError) else type(exc).__name__
        if isinstance(exc, TransientError):
            detail = f"gave up after {row.attempts} attempts: {exc.reason}"
        elif isinstance(exc, ConfigurationError):
            detail = f"configuration: {exc.reason}"
        else:
            detail = exc.reason
        transition_with_event(
            session, row.id, [S.SENDING], S.FAILED, "failed", {"reason": detail, "kind": kind},
            last_error=detail, lease_until=None, **tried,
        )  # fmt: skip
        log.warning("deliver.failed", reason=detail)
        return DeliverResult(Outcome.FAILED, detail)
