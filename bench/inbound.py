"""Inbound listener throughput: 20 concurrent SMTP clients, against a do-nothing sink.

Both servers are aiosmtpd on loopback in this process, measured in the same run:
the baseline answers 250 to everything and keeps nothing; the comms listener
checks every RCPT (token HMAC, domain, delivery lookup, per-tenant rate
limit), stores each message durably (fsync) before its 250 and publishes the
threading task to Redis. Prints messages/s for both and the ratio; never fails
on timing.
"""

from __future__ import annotations

import argparse
import os
import smtplib
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _Nothing:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _drive(port: int, recipient: str, clients: int, per_client: int) -> float:
    """Messages per second through ``clients`` parallel connections."""
    body = (
        f"From: Ann <ann@example.org>\r\nTo: {recipient}\r\nSubject: Re: News\r\n\r\n"
        + "Thanks, see you there!\r\n" * 20
    ).encode()
    errors: list[BaseException] = []
    start_line = threading.Barrier(clients + 1)

    def client() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                start_line.wait()
                for _ in range(per_client):
                    smtp.sendmail("ann@example.org", [recipient], body)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    start_line.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} client(s) failed: {errors[0]!r}")
    return clients * per_client / elapsed


def _timed(label: str, run: Callable[[], float]) -> float:
    rate = run()
    print(f"    {label:<38}{rate:8.1f} msg/s")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--messages", type=int, default=50, help="per client")
    args = parser.parse_args()

    from aiosmtpd.controller import Controller

    from comms.db import migrate, unit_of_work
    from comms.devstack import DevStack, free_port
    from comms.endpoints import get_endpoints
    from comms.inbound.replies import set_reply_domain
    from comms.inbound.store import LocalStore
    from comms.links import reply_address
    from comms.logging import configure_logging
    from comms.messaging import accept
    from comms.settings import get_settings
    from comms.tenants import create_tenant
    from workers.listener import ReplyListener

    configure_logging("WARNING", "console")
    data_dir = ROOT / ".comms" / "bench-inbound"
    os.environ["COMMS_DATA_DIR"] = str(data_dir)
    stack = DevStack(data_dir)
    stack.destroy()
    get_endpoints()
    migrate()
    try:
        from sqlalchemy import select

        from comms.commands import EmailCommand, parse_command
        from comms.models import Delivery

        with unit_of_work() as session:
            tenant, _ = create_tenant(session, "bench")
            set_reply_domain(session, tenant.id, "news.bench.example")
            command = parse_command(EmailCommand, {
                "tenant_id": str(tenant.id), "from": "news@bench.example",
                "to": ["ann@example.org"], "subject": "News", "text": "Hi",
            })  # fmt: skip
            accepted = accept(session, tenant.id, command, source="bench")
            delivery_id = session.scalars(
                select(Delivery.id).where(Delivery.message_id == accepted.message_id)
            ).one()
            recipient = reply_address(delivery_id, "news.bench.example")

        print(f"inbound listener, {args.clients} clients x {args.messages} messages")
        baseline = Controller(_Nothing(), hostname="127.0.0.1", port=free_port())
        baseline.start()
        try:
            base = _timed(
                "do-nothing aiosmtpd sink",
                lambda: _drive(baseline.port, recipient, args.clients, args.messages),
            )
        finally:
            baseline.stop()

        settings = get_settings().model_copy(
            update={
                "inbound_port": free_port(),
                "inbound_rate_per_tenant": 1e6,
                "inbound_burst_per_tenant": 1e6,
                "inbound_max_connections": args.clients + 5,
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            listener = ReplyListener(settings, LocalStore(Path(tmp)))
            listener.start()
            try:
                ours = _timed(
                    "comms listener (check, store, queue)",
                    lambda: _drive(listener.bound_port, recipient, args.clients, args.messages),
                )
            finally:
                listener.stop()
        print(f"    {'ratio comms / sink':<38}{ours / base:8.3f}")
    finally:
        stack.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
