"""Routes of the public HTTP API; each is thin: authenticate, call one domain function."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Header, Response
from sqlalchemy import text

from comms import __version__
from comms.api.auth import tenant_id as tenant_id_dep
from comms.api.campaigns import router as campaigns_router
from comms.api.domains import notify_router
from comms.api.domains import router as domains_router
from comms.api.problems import Problem, install, validation_problem
from comms.api.providers import router as providers_router
from comms.api.replies import router as replies_router
from comms.api.suppressions import router as suppressions_router
from comms.api.webhooks import router as webhooks_router
from comms.commands import EmailContent, SmsContent
from comms.db import unit_of_work
from comms.messaging import (
    IdempotencyConflict,
    MessageNotFound,
    accept,
    message_status,
)

TenantDep = Annotated[uuid.UUID, Depends(tenant_id_dep)]
IdempotencyHeader = Annotated[str | None, Header(alias="Idempotency-Key")]


def _idempotency_key(value: str | None) -> str | None:
    if value is not None and not 1 <= len(value) <= 200:
        raise validation_problem(
            [{"field": "Idempotency-Key", "message": "must be 1 to 200 characters"}]
        )
    return value


def _accept(
    tenant_id: uuid.UUID,
    content: EmailContent | SmsContent,
    key: str | None,
    response: Response,
) -> dict[str, Any]:
    # the transaction commits before the response is written: a 202 means the rows exist
    try:
        with unit_of_work() as session:
            accepted = accept(session, tenant_id, content, idempotency_key=key, source="api")
    except IdempotencyConflict as exc:
        raise Problem(409, "Idempotency key reused", str(exc), "idempotency-conflict") from None
    if accepted.created:
        response.status_code = 202
    else:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return {
        "id": str(accepted.message_id),
        "status": "accepted",
        "recipients": len(accepted.delivery_ids),
    }


def create_app(aws_transport: httpx.BaseTransport | None = None) -> FastAPI:
    """The API. ``aws_transport`` replaces the network below the HTTP client that fetches
    SNS signing certificates and confirms subscriptions (tests; never in production)."""
    app = FastAPI(
        title="comms",
        version=__version__,
        description="Multi-tenant email and SMS delivery. Authenticate with "
        "`Authorization: Bearer <tenant API key>`.",
    )
    install(app)
    app.state.aws_http = httpx.Client(timeout=5.0, follow_redirects=False, transport=aws_transport)
    app.state.sns_verifier = None
    app.include_router(providers_router)
    app.include_router(campaigns_router)
    app.include_router(webhooks_router)
    app.include_router(suppressions_router)
    app.include_router(replies_router)
    app.include_router(domains_router)
    app.include_router(notify_router)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        with unit_of_work() as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok"}

    @app.post("/v1/messages/email", status_code=202, tags=["messages"])
    def send_email(
        content: EmailContent,
        tenant_id: TenantDep,
        response: Response,
        idempotency_key: IdempotencyHeader = None,
    ) -> dict[str, Any]:
        """Accept an email for one or more recipients; delivery happens on the fleet."""
        key = _idempotency_key(idempotency_key)
        return _accept(tenant_id, content, key, response)

    @app.post("/v1/messages/sms", status_code=202, tags=["messages"])
    def send_sms(
        content: SmsContent,
        tenant_id: TenantDep,
        response: Response,
        idempotency_key: IdempotencyHeader = None,
    ) -> dict[str, Any]:
        """Accept an SMS for one or more E.164 numbers."""
        key = _idempotency_key(idempotency_key)
        return _accept(tenant_id, content, key, response)

    @app.get("/v1/messages/{message_id}", tags=["messages"])
    def get_message(message_id: str, tenant_id: TenantDep) -> dict[str, Any]:
        """The message and each recipient's delivery status."""
        try:
            with unit_of_work() as session:
                return message_status(session, tenant_id, uuid.UUID(message_id))
        except (ValueError, MessageNotFound):
            raise Problem(404, "Not found", f"message {message_id} does not exist") from None

    return app
