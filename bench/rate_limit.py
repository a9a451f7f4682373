"""The fleet-wide rate limit: 2 worker processes, one provider limited to 50/s, 1,500 sends.

Prints the achieved rate over the configured rate (target >= 0.97) and the
busiest 1-second window the SMTP sink saw (never above rate + burst). Prints
figures; never fails on timing.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def busiest_window(times: list[float], width: float = 1.0) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= width:
            start += 1
        best = max(best, end - start + 1)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--burst", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
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
    data_dir = ROOT / ".comms" / "bench-rate"
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
            with unit_of_work() as session:
                tenant, _ = create_tenant(session, "bench")
                create_provider_config(
                    session, kind="smtp", name="limited", tenant_id=tenant.id,
                    settings={"host": "127.0.0.1", "port": sink.port,
                              "rate": args.rate, "burst": args.burst},
                )  # fmt: skip
                tenant_id = tenant.id
            for i in range(args.workers):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "comms.cli", "worker", "-Q", "send",
                         "-c", "1", "-n", f"rate{i}@%h"],
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    )
                )  # fmt: skip
            for offset in range(0, args.messages, 500):
                to = [f"r{i}@example.org" for i in range(offset, min(offset + 500, args.messages))]
                client.send_email(
                    tenant_id=tenant_id, sender="bench@example.com", to=to,
                    subject="Bench", text="Hello",
                )  # fmt: skip
            complete = handler.wait_for(args.messages, timeout=args.messages / args.rate * 3 + 60)
            times = [m.received_at for m in handler.received]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
        stack.destroy()

    span = max(times) - min(times) if len(times) > 1 else float("inf")
    achieved = (len(times) - 1) / span
    print(f"deliveries                      {len(times)} / {args.messages}")
    print(f"configured rate                 {args.rate:8.1f} /s (burst {args.burst:g})")
    print(f"achieved rate                   {achieved:8.1f} /s")
    print(f"ratio achieved / configured     {achieved / args.rate:8.3f}  (target >= 0.97)")
    print(f"busiest 1-second window         {busiest_window(times):8d}  "
          f"(limit rate + burst = {args.rate + args.burst:g})")  # fmt: skip
    if not complete:
        print("warning: not every delivery arrived in time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
