"""End-to-end sends per second through the SMTP provider into a loopback sink.

Measured against a plain smtplib loop into the same sink in the same run and
reported as a ratio; prints figures and never fails on timing.

    make bench            # or: .venv/bin/python bench/smtp_throughput.py --messages 500
"""

from __future__ import annotations

import argparse
import os
import signal
import smtplib
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def baseline(port: int, n: int) -> float:
    """Plain smtplib over one connection: the floor any provider pays."""
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as conn:
        for i in range(n):
            msg = EmailMessage()
            msg["From"] = "bench@example.com"
            msg["To"] = f"base{i}@example.org"
            msg["Subject"] = "Bench"
            msg["Message-ID"] = f"<{uuid.uuid4()}@bench>"
            msg.set_content("Hello")
            conn.send_message(msg)
    return n / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    args = parser.parse_args()

    from comms import client
    from comms.db import migrate, unit_of_work
    from comms.devsink import SinkHandler, SmtpSink
    from comms.devstack import DevStack
    from comms.endpoints import get_endpoints
    from comms.logging import configure_logging
    from comms.provider_configs import create_provider_config
    from comms.tenants import create_tenant

    configure_logging("WARNING", "console")
    data_dir = ROOT / ".comms" / "bench"
    os.environ["COMMS_DATA_DIR"] = str(data_dir)
    stack = DevStack(data_dir)
    endpoints = get_endpoints()
    migrate()
    env = {
        **os.environ,
        "COMMS_DATABASE_URL": endpoints.database_url,
        "COMMS_REDIS_URL": endpoints.redis_url,
        "COMMS_MASTER_KEYS": endpoints.master_keys or "",
        "COMMS_LOG_LEVEL": "WARNING",
    }
    handler = SinkHandler()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with SmtpSink(handler) as sink:
            base_rate = baseline(sink.port, args.messages)
            handler.received.clear()
            with unit_of_work() as session:
                tenant, _ = create_tenant(session, "bench")
                create_provider_config(
                    session,
                    kind="smtp",
                    name="sink",
                    settings={"host": "127.0.0.1", "port": sink.port},
                    tenant_id=tenant.id,
                )
                tenant_id = tenant.id
            for i in range(args.workers):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "comms.cli", "worker", "-Q", "send",
                         "-c", "1", "-n", f"bench{i}@%h"],
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )
                )  # fmt: skip
            # warm-up: one send proves the workers are consuming before the clock starts
            client.send_email(
                tenant_id=tenant_id, sender="bench@example.com", to=["warm@example.org"],
                subject="warm", text="up",
            )  # fmt: skip
            if not handler.wait_for(1, timeout=60):
                print("workers did not start; see `comms worker` output", file=sys.stderr)
                return 1
            start = time.perf_counter()
            batch = 100
            for offset in range(0, args.messages, batch):
                to = [
                    f"r{i}@example.org" for i in range(offset, min(offset + batch, args.messages))
                ]
                client.send_email(
                    tenant_id=tenant_id, sender="bench@example.com", to=to,
                    subject="Bench", text="Hello",
                )  # fmt: skip
            done = handler.wait_for(args.messages + 1, timeout=300)
            elapsed = time.perf_counter() - start
            rate = (handler.count() - 1) / elapsed
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
        stack.destroy()

    print(f"messages                        {args.messages}")
    print(f"plain smtplib loop (baseline)   {base_rate:8.1f} msg/s")
    print(f"comms fleet, {args.workers} workers, SMTP      {rate:8.1f} msg/s")
    print(f"ratio comms / baseline          {rate / base_rate:8.3f}")
    if not done:
        print("warning: not every message arrived within 300 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
