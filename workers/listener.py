"""The inbound SMTP listener (``comms inbound serve``): replies in, never an open relay.

Stage by stage:

- **connect**: more than ``COMMS_INBOUND_MAX_CONNECTIONS`` at once → ``421``.
- **RCPT**: only ``reply+TOKEN@<a tenant's reply domain>`` with a genuine token
  (``550 5.1.1`` otherwise, before any data is read); more than
  ``COMMS_INBOUND_MAX_RECIPIENTS`` → ``452 4.5.3``; a tenant over its inbound
  rate → ``451 4.7.1``.
- **DATA**: larger than ``COMMS_INBOUND_MAX_MESSAGE_BYTES`` → ``552``. The raw
  message is written to the store (fsynced file or S3 object) *before* ``250``
  is answered, then the ``comms.inbound`` task is published. If the store
  fails the sender gets ``451`` and tries again; if only the publish fails, the
  message is already safe and the startup reconciliation publishes it.

STARTTLS is offered when ``COMMS_INBOUND_TLS_CERT``/``_KEY`` are set. Database,
Redis and storage calls run in a thread pool so one slow call does not stall
other sessions.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession
from sqlalchemy import select

from comms import contract
from comms.db import unit_of_work
from comms.dispatch import publish
from comms.inbound.replies import Refused, check_recipient
from comms.inbound.store import Envelope, RawStore, get_store
from comms.models import InboundReply
from comms.ratelimit import RateLimiter
from comms.settings import Settings, get_settings

log = structlog.get_logger(__name__)
T = TypeVar("T")


class ReplyHandler:
    """aiosmtpd hooks: the RCPT policy and the durable DATA step."""

    def __init__(self, settings: Settings, store: RawStore) -> None:
        self.settings = settings
        self.store = store
        self.active_connections = 0
        # blocking steps (database, Redis, fsync) run here; sized for many slow sessions
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="inbound")

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= self.settings.inbound_max_recipients:
            return "452 4.5.3 Too many recipients"
        try:
            accepted = await self._run(check_recipient, address)
        except Refused as refused:
            log.info("inbound.refused", stage="rcpt", reply=refused.reply)
            return refused.reply
        except Exception:
            log.exception("inbound.rcpt_error")
            return "451 4.3.0 Temporary failure, try again later"
        try:
            allowed = await self._run(
                RateLimiter().try_take,
                f"inbound:{accepted.tenant_id}",
                self.settings.inbound_rate_per_tenant,
                self.settings.inbound_burst_per_tenant,
            )
        except Exception:
            log.exception("inbound.rate_limit_error")
            return "451 4.3.0 Temporary failure, try again later"
        if not allowed:
            return "451 4.7.1 Too many messages for this domain, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        data = envelope.original_content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        peer = session.peer
        meta = Envelope(
            recipients=list(envelope.rcpt_tos),
            mail_from=envelope.mail_from,
            peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else None,
            helo=session.host_name,
        )
        try:
            key = await self._run(self.store.put, data, meta)
        except Exception:
            log.exception("inbound.store_failed")
            return "451 4.3.0 Could not store the message, try again later"
        try:
            await self._run(publish, contract.INBOUND, [key])
        except Exception:
            # stored durably already: the startup reconciliation publishes it
            log.exception("inbound.publish_failed", raw_key=key)
        log.info("inbound.accepted", raw_key=key, recipients=len(meta.recipients))
        return f"250 2.0.0 OK: queued as {key}"


class ReplySMTP(SMTP):
    """aiosmtpd's SMTP with a cap on concurrent connections."""

    def connection_made(self, transport: Any) -> None:
        handler: ReplyHandler = self.event_handler
        if getattr(self, "_counted", False):  # STARTTLS: the same connection, now encrypted
            super().connection_made(transport)
            return
        if handler.active_connections >= handler.settings.inbound_max_connections:
            transport.write(b"421 4.7.0 Too many connections, try again later\r\n")
            transport.close()
            return
        self._counted = True
        handler.active_connections += 1
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_counted", False):
            self._counted = False
            self.event_handler.active_connections -= 1
            super().connection_lost(exc)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.inbound_tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.inbound_tls_cert), str(settings.inbound_tls_key or ""))
    return context


class ReplyListener(Controller):
    """The listener on a background thread (``start``/``stop``), as the CLI and tests use it."""

    def __init__(self, settings: Settings | None = None, store: RawStore | None = None) -> None:
        self.settings = settings or get_settings()
        self.handler = ReplyHandler(self.settings, store or get_store())
        self.tls = tls_context(self.settings)
        super().__init__(
            self.handler,
            hostname=self.settings.inbound_host,
            port=self.settings.inbound_port,
            ready_timeout=10,
        )

    def factory(self) -> SMTP:
        return ReplySMTP(
            self.handler,
            data_size_limit=self.settings.inbound_max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            tls_context=self.tls,
            require_starttls=False,
            ident="comms inbound",
        )

    def stop(self, no_assert: bool = False) -> None:
        super().stop(no_assert=no_assert)
        self.handler.executor.shutdown(wait=True)

    @property
    def bound_port(self) -> int:
        server = getattr(self, "server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
        return int(self.port)


def reconcile(store: RawStore, *, days: int = 7) -> int:
    """Publish every stored message of the last ``days`` that has no InboundReply yet.

    Run when the listener starts: a message stored just before a crash (or whose
    publish failed) is processed; the task is idempotent, so one that is already
    queued is not processed twice.
    """
    since = (datetime.now(UTC) - timedelta(days=days)).strftime("inbound/%Y/%m/%d")
    recent = [key for key in store.list_keys() if key[: len(since)] >= since]
    done: set[str] = set()
    for start in range(0, len(recent), 1000):
        chunk = recent[start : start + 1000]
        with unit_of_work() as session:
            done.update(
                session.scalars(select(InboundReply.raw_key).where(InboundReply.raw_key.in_(chunk)))
            )
    missing = [key for key in recent if key not in done]
    for key in missing:
        publish(contract.INBOUND, [key])
    return len(missing)
