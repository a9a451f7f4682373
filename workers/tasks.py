"""Thin tasks: decode the arguments, call one domain function, classify the outcome."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from celery import Task

from comms import contract
from comms.commands import CommandError, EmailCommand, SmsCommand, parse_command
from comms.db import unit_of_work
from comms.dispatch import publish, queue_depth
from comms.inbound.replies import forward_reply, thread_message
from comms.messaging import IdempotencyConflict, UnknownTenant, accept
from comms.sending import deliver as deliver_one
from comms.sending import now_utc
from schedulers.engagement import apply_engagement
from schedulers.fanout import fanout_batch
from schedulers.sweeper import sweep as sweep_once
from workers.app import app

log = structlog.get_logger(__name__)


def _accept(model: type[EmailCommand] | type[SmsCommand], payload: Any) -> str | None:
    try:
        command = parse_command(model, payload)
    except CommandError as exc:
        # a malformed command can never succeed: log every bad field and drop it
        log.error("command.invalid", errors=exc.errors)
        return None
    structlog.contextvars.bind_contextvars(tenant_id=str(command.tenant_id))
    try:
        with unit_of_work() as session:
            accepted = accept(
                session,
                command.tenant_id,
                command,
                idempotency_key=command.idempotency_key,
                source="queue",
            )
    except (UnknownTenant, IdempotencyConflict) as exc:
        log.error("command.refused", reason=str(exc))
        return None
    log.info("command.accepted", message_id=str(accepted.message_id), created=accepted.created)
    return str(accepted.message_id)


@app.task(name=contract.SEND_EMAIL)
def send_email(payload: dict[str, Any]) -> str | None:
    return _accept(EmailCommand, payload)


@app.task(name=contract.SEND_SMS)
def send_sms(payload: dict[str, Any]) -> str | None:
    return _accept(SmsCommand, payload)


@app.task(name=contract.DELIVER, bind=True)
def deliver(self: Task[Any, Any], delivery_id: str) -> str:
    structlog.contextvars.clear_contextvars()
    return deliver_one(uuid.UUID(delivery_id)).outcome.value


@app.task(name=contract.FANOUT)
def fanout(campaign_id: str, cursor: str, seq: int = 0) -> int:
    report = fanout_batch(uuid.UUID(campaign_id), cursor or None, seq=seq)
    return report.inserted


@app.task(name=contract.ENGAGEMENT)
def engagement(event_id: str) -> bool:
    return apply_engagement(uuid.UUID(event_id))


@app.task(name=contract.SWEEP)
def sweep() -> dict[str, int]:
    report = sweep_once(now_utc(), send_queue_depth=queue_depth("send"))
    return {"due": report.due, "stuck": report.stuck, "lost": report.lost}


@app.task(name=contract.INBOUND)
def inbound(raw_key: str) -> str | None:
    """Thread one stored inbound message (idempotent on its key), then forward it."""
    reply_id = thread_message(raw_key)
    if reply_id is not None:
        publish(contract.FORWARD_REPLY, [str(reply_id)])
    return str(reply_id) if reply_id else None


@app.task(name=contract.FORWARD_REPLY)
def forward_reply_task(reply_id: str) -> str:
    return forward_reply(uuid.UUID(reply_id))


@app.task(name=contract.DOMAIN_DRIFT)
def domain_drift() -> dict[str, int]:
    from comms.domains.service import drift_all

    reports = drift_all()
    return {
        "checked": len(reports),
        "repaired": sum(len(r.repaired) for r in reports),
        "drifted": sum(1 for r in reports if r.major),
    }
