"""A loopback SMTP sink (aiosmtpd) that counts what it receives: demo, tests, bench."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller

OK = "250 OK"

# aiosmtpd logs every SMTP verb at INFO: far too chatty for a sink
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass(frozen=True)
class ReceivedMail:
    sender: str
    recipients: tuple[str, ...]
    message_id: str
    subject: str
    raw: bytes
    received_at: float  # time.monotonic() when DATA completed


@dataclass
class SinkHandler:
    """Records every accepted message. ``on_rcpt`` may delay or refuse a recipient."""

    on_rcpt: Callable[[str], str | None] | None = None
    received: list[ReceivedMail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.arrived = threading.Condition(self.lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.on_rcpt is not None:
            import asyncio

            verdict = await asyncio.get_running_loop().run_in_executor(None, self.on_rcpt, address)
            if verdict:
                return verdict
        envelope.rcpt_tos.append(address)
        return OK

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = bytes(envelope.original_content or envelope.content)
        parsed = message_from_bytes(raw, policy=default_policy)
        mail = ReceivedMail(
            sender=envelope.mail_from,
            recipients=tuple(envelope.rcpt_tos),
            message_id=str(parsed.get("Message-ID", "")),
            subject=str(parsed.get("Subject", "")),
            raw=raw,
            received_at=time.monotonic(),
        )
        with self.arrived:
            self.received.append(mail)
            self.arrived.notify_all()
        return OK

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def recipients(self) -> list[str]:
        with self.lock:
            return [r for mail in self.received for r in mail.recipients]

    def wait_for(self, n: int, timeout: float) -> bool:
        """Block until ``n`` messages have arrived or ``timeout`` passes."""
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.received) >= n, timeout=timeout)


class SmtpSink:
    """Runs a SinkHandler on a loopback port in a background thread."""

    def __init__(
        self,
        handler: SinkHandler | None = None,
        port: int = 0,
        authenticator: Callable[..., Any] | None = None,
    ) -> None:
        self.handler = handler or SinkHandler()
        if port == 0:
            from comms.devstack import free_port

            port = free_port()
        self.port = port
        auth: dict[str, Any] = (
            # loopback only: AUTH without TLS is acceptable for a test sink
            {"authenticator": authenticator, "auth_require_tls": False} if authenticator else {}
        )
        self._controller = Controller(
            self.handler, hostname="127.0.0.1", port=port, ready_timeout=10, **auth
        )

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
