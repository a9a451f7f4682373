"""Provider callbacks (SES via SNS, Twilio, our webhook provider) and one-click unsubscribe.

Every callback is verified before anything is read into the database; a
refused one answers 4xx and records nothing. Verified events are recorded in
the request (idempotently, by provider event id) so a 200 means they are stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from sqlalchemy import select

from comms import contract
from comms.api.problems import Problem
from comms.crypto import DecryptionError
from comms.db import after_commit, unit_of_work
from comms.dispatch import publish
from comms.events import ENGAGEMENT, EventType, IncomingEvent, record
from comms.links import BadToken, verify_tracking, verify_unsubscribe
from comms.models import Delivery, ProviderConfig, Subscriber, SuppressionReason
from comms.provider_configs import build_provider
from comms.provider_events import (
    MalformedEvent,
    is_machine_open,
    parse_custom,
    parse_ses,
    parse_twilio,
)
from comms.settings import get_settings
from comms.sns import SnsVerificationError, SnsVerifier, confirm_subscription
from comms.suppression import suppress
from comms.tracking import PIXEL_GIF

router = APIRouter(tags=["webhooks"])
log = structlog.get_logger(__name__)


def _record_all(events: list[IncomingEvent]) -> dict[str, int]:
    counts = {"recorded": 0, "duplicates": 0, "unknown": 0}
    with unit_of_work() as session:
        for event in events:
            result = record(session, event)
            if result.event_id is not None:
                counts["recorded"] += 1
                if event.type in ENGAGEMENT and not event.machine:
                    after_commit(
                        session, partial(publish, contract.ENGAGEMENT, [str(result.event_id)])
                    )
            elif result.delivery_id is not None:
                counts["duplicates"] += 1
            else:
                counts["unknown"] += 1
    return counts


def sns_verifier(http: httpx.Client) -> SnsVerifier:
    """Built once per app, so fetched signing certificates stay cached."""
    settings = get_settings()
    ca = settings.sns_trusted_ca_file
    return SnsVerifier(
        settings.sns_allowed_topics,
        cert_host_pattern=settings.sns_cert_host_pattern,
        trusted_ca_pem=ca.read_bytes() if ca else None,
        max_age=timedelta(seconds=settings.sns_max_age_seconds),
        http=http,
    )


def _sns(request: Request) -> tuple[SnsVerifier, httpx.Client]:
    state = request.app.state
    if getattr(state, "sns_verifier", None) is None:
        state.sns_verifier = sns_verifier(state.aws_http)
    return state.sns_verifier, state.aws_http


@router.post("/v1/webhooks/ses")
async def ses_webhook(request: Request) -> dict[str, Any]:
    """SES event publishing through an SNS HTTPS subscription (signature verified)."""
    verifier, http = _sns(request)
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Problem(400, "Malformed JSON", "an SNS message is a JSON object") from None
    if not isinstance(body, dict):
        raise Problem(400, "Malformed message", "an SNS message is a JSON object")
    try:
        message = verifier.verify(body)
    except SnsVerificationError as exc:
        log.warning("ses.refused", reason=str(exc))
        raise Problem(403, "Not a genuine SNS message", str(exc)) from None
    if message.type == "SubscriptionConfirmation":
        try:
            confirm_subscription(message, http)
        except (SnsVerificationError, httpx.HTTPError) as exc:
            raise Problem(400, "Subscription not confirmed", str(exc)) from None
        return {"confirmed": message.topic_arn}
    if message.type != "Notification":
        return {"ignored": message.type}
    try:
        events = parse_ses(message.message_id, message.message)
    except MalformedEvent as exc:
        raise Problem(400, "Malformed SES event", str(exc)) from None
    return _record_all(events)


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 over the URL and sorted form pairs."""
    payload = url + "".join(f"{k}{params[k]}" for k in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _public_url(request: Request) -> str:
    base = get_settings().public_base_url.rstrip("/")
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{base}{request.url.path}{query}"


@router.post("/v1/webhooks/twilio")
async def twilio_webhook(request: Request) -> dict[str, Any]:
    """Twilio status callbacks; the URL we give Twilio carries ``delivery_id``."""
    form = {k: str(v) for k, v in (await request.form()).items()}
    delivery_id = _delivery_id(request.query_params.get("delivery_id"))
    with unit_of_work() as session:
        delivery = session.get(Delivery, delivery_id) if delivery_id else None
        config = (
            session.get(ProviderConfig, delivery.provider_config_id)
            if delivery and delivery.provider_config_id
            else None
        )
        if config is None or config.kind != "twilio":
            raise Problem(403, "Unknown callback", "no Twilio delivery matches this callback")
        try:
            token = str(build_provider(config).settings["auth_token"])
        except (DecryptionError, KeyError):
            raise Problem(403, "Unknown callback", "cannot verify this callback") from None
    expected = twilio_signature(token, _public_url(request), form)
    given = request.headers.get("X-Twilio-Signature", "")
    if not hmac.compare_digest(expected, given):
        raise Problem(403, "Bad signature", "X-Twilio-Signature does not match")
    try:
        event = parse_twilio(form, delivery_id)
    except MalformedEvent as exc:
        raise Problem(400, "Malformed callback", str(exc)) from None
    return _record_all([event])


def _delivery_id(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


@router.post("/v1/webhooks/custom/{config_id}")
async def custom_webhook(config_id: str, request: Request) -> dict[str, Any]:
    """Events from a tenant's own endpoint, signed like our webhook provider signs."""
    from comms.providers.webhook import verify

    raw = await request.body()
    cid = _delivery_id(config_id)
    with unit_of_work() as session:
        config = session.get(ProviderConfig, cid) if cid else None
        if config is None or config.kind != "webhook":
            raise Problem(404, "Not found", "no such webhook provider")
        secret = str(build_provider(config).settings["signing_secret"])
        tenant_id = config.tenant_id
    if not verify(secret, raw, request.headers.get("Comms-Signature", "")):
        raise Problem(403, "Bad signature", "Comms-Signature does not verify")
    try:
        event = parse_custom(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Problem(400, "Malformed JSON", "the body is not JSON") from None
    except MalformedEvent as exc:
        raise Problem(400, "Malformed event", str(exc)) from None
    with unit_of_work() as session:
        delivery = session.get(Delivery, event.delivery_id)
        if delivery is None or delivery.tenant_id != tenant_id:
            raise Problem(404, "Not found", "no such delivery for this provider")
    return _record_all([event])


# -- one-click unsubscribe (RFC 8058) ------------------------------------------
_NOT_FOUND = PlainTextResponse("Not found", status_code=404)


def _unsubscribe(token: str) -> bool:
    try:
        parsed = verify_unsubscribe(token)
    except BadToken:
        return False
    with unit_of_work() as session:
        subscriber = session.get(Subscriber, parsed.subscriber_id)
        if subscriber is None or subscriber.tenant_id != parsed.tenant_id:
            return False
        suppress(
            session, parsed.tenant_id, subscriber.email, SuppressionReason.UNSUBSCRIBE,
            f"one-click, list {parsed.list_id}",
        )  # fmt: skip
        delivery = session.scalars(
            select(Delivery).where(
                Delivery.subscriber_id == subscriber.id, Delivery.campaign_id == parsed.list_id
            )
        ).first()
        if delivery is not None:
            record(session, IncomingEvent(
                provider_event_id=f"unsubscribe:{delivery.id}", type=EventType.UNSUBSCRIBED,
                occurred_at=datetime.now(UTC),
                delivery_id=delivery.id, recipient=subscriber.email,
            ))  # fmt: skip
    return True


@router.post("/u/{token}", include_in_schema=False)
def one_click_unsubscribe(token: str) -> Response:
    """RFC 8058: mail clients POST ``List-Unsubscribe=One-Click``; no login, no confirmation."""
    if not _unsubscribe(token):
        return _NOT_FOUND
    return PlainTextResponse("You are unsubscribed.")


@router.get("/u/{token}", include_in_schema=False)
def unsubscribe_page(token: str) -> Response:
    """A person clicking the link sees a one-button page (GET never unsubscribes: scanners)."""
    try:
        verify_unsubscribe(token)
    except BadToken:
        return _NOT_FOUND
    return HTMLResponse(
        "<!doctype html><title>Unsubscribe</title>"
        "<p>Stop receiving these emails?</p>"
        f'<form method="post" action="/u/{token}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )


# -- open and click tracking (campaigns with tracking on, non-tracking providers) ---------
_NO_STORE = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache"}


def _tracked(request: Request, delivery_id: uuid.UUID, type_: EventType, url: str | None) -> None:
    user_agent = request.headers.get("User-Agent")
    ip = request.client.host if request.client else None
    minute = int(datetime.now(UTC).timestamp() // 60)
    # one event per delivery (and link) per minute: reloads and prefetch bursts count once
    suffix = hashlib.sha256((url or "").encode()).hexdigest()[:16] if url else "open"
    _record_all([
        IncomingEvent(
            provider_event_id=f"track:{delivery_id}:{suffix}:{minute}", type=type_,
            occurred_at=datetime.now(UTC), delivery_id=delivery_id,
            machine=type_ is EventType.OPENED and is_machine_open(user_agent, ip),
            data={"url": url} if url else {"user_agent": (user_agent or "")[:200]},
        )
    ])  # fmt: skip


@router.get("/t/o/{token}", include_in_schema=False)
def open_pixel(token: str, request: Request) -> Response:
    """The open pixel: a 1x1 GIF, and an ``opened`` event for the delivery."""
    try:
        delivery_id, url = verify_tracking(token.removesuffix(".gif"))
    except BadToken:
        return _NOT_FOUND
    if url is None:
        _tracked(request, delivery_id, EventType.OPENED, None)
    return Response(PIXEL_GIF, media_type="image/gif", headers=_NO_STORE)


@router.get("/t/c/{token}", include_in_schema=False)
def click_redirect(token: str, request: Request) -> Response:
    """A tracked link: a ``clicked`` event, then a redirect to the URL that was in the mail."""
    try:
        delivery_id, url = verify_tracking(token)
    except BadToken:
        return _NOT_FOUND
    if url is None:
        return _NOT_FOUND
    _tracked(request, delivery_id, EventType.CLICKED, url)
    return RedirectResponse(url, status_code=302, headers=_NO_STORE)
