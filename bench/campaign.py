"""Campaign benchmarks: end-to-end throughput, and a 1,000,000-recipient fan-out.

(1) A campaign through real worker processes into a loopback SMTP sink, as a
    ratio to a plain smtplib loop into the same sink in the same run (target 0.6).
(2) Firing a 1,000,000-recipient campaign with send-time optimisation: the time
    for the fan-out workers to write every Delivery (most as ``scheduled``),
    their peak RSS and Redis's peak memory (targets: under 60 s, Redis under 100 MB).
Prints figures; never fails on timing.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from smtp_throughput import baseline  # noqa: E402

from schedulers.sendtime import pack_histogram  # noqa: E402


def _workers(
    env: dict[str, str], queues: str, n: int, concurrency: int
) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "comms.cli", "worker", "-Q", queues, "-c", str(concurrency),
             "-n", f"{queues.replace(',', '-')}{i}@%h"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for i in range(n)
    ]  # fmt: skip


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _rss(procs: list[subprocess.Popen[bytes]]) -> int:
    total = 0
    for proc in procs:
        try:
            parent = psutil.Process(proc.pid)
            total += sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
        except psutil.NoSuchProcess:
            pass
    return total


WARM_UP = 40


def throughput(env: dict[str, str], recipients: int) -> None:
    from comms.campaigns import create_campaign, fire
    from comms.db import unit_of_work
    from comms.devsink import SinkHandler, SmtpSink
    from comms.provider_configs import create_provider_config
    from comms.tenants import create_tenant

    handler = SinkHandler()
    with SmtpSink(handler) as sink:
        base_rate = baseline(sink.port, recipients)
        handler.received.clear()
        with unit_of_work() as session:
            tenant, _ = create_tenant(session, "bench")
            create_provider_config(
                session, kind="smtp", name="sink", tenant_id=tenant.id,
                settings={"host": "127.0.0.1", "port": sink.port},
            )  # fmt: skip
            _subscribers(session, tenant.id, WARM_UP, with_models=False, tag="warm-up")
            _subscribers(session, tenant.id, recipients, with_models=False, tag="bench")
            warm_up, campaign = (
                create_campaign(
                    session, tenant.id, name=tag, sender="news@example.com",
                    subject="Hello {{ first_name }}", text="Hi {{ first_name }}",
                    tags=[tag],
                )
                for tag in ("warm-up", "bench")
            )  # fmt: skip
            tenant_id, warm_up_id, campaign_id = tenant.id, warm_up.id, campaign.id
        procs = _workers(env, "send,fanout", 2, 2)
        try:
            # A small campaign first, so that worker start-up and first connections
            # are not on the clock: the figure is the steady-state rate.
            with unit_of_work() as session:
                fire(session, warm_up_id, tenant_id)
            handler.wait_for(WARM_UP, timeout=120)
            handler.received.clear()
            start = time.perf_counter()
            with unit_of_work() as session:
                fire(session, campaign_id, tenant_id)
            done = handler.wait_for(recipients, timeout=600)
            elapsed = time.perf_counter() - start
        finally:
            _stop(procs)
    rate = handler.count() / elapsed
    print(f"(1) campaign of {recipients} through 2 workers x 2 processes")
    print(f"    plain smtplib loop (baseline)   {base_rate:8.1f} msg/s")
    print(f"    comms campaign, fire to inbox   {rate:8.1f} msg/s  (after a warm-up campaign)")
    print(f"    ratio comms / baseline          {rate / base_rate:8.3f}  (target >= 0.6)")
    if not done:
        print("    warning: not every message arrived")


def _subscribers(
    session: object, tenant_id: uuid.UUID, n: int, *, with_models: bool, tag: str = "bench"
) -> None:
    """COPY ``n`` subscribers (and engagement models) in: the set-up, not what is measured."""
    conn = session.connection().connection.dbapi_connection  # type: ignore[attr-defined]
    rng = np.random.default_rng(3)
    ids = [uuid.uuid4() for _ in range(n)]
    with conn.cursor() as cur:
        with cur.copy("COPY subscribers (id, tenant_id, email, fields, tags) FROM STDIN") as copy:
            for i, sid in enumerate(ids):
                copy.write_row((sid, tenant_id, f"{tag}{i:07d}@example.org",
                                f'{{"first_name": "R{i}"}}', f"{{{tag}}}"))  # fmt: skip
        if with_models:
            peaks = rng.integers(0, 168, n)
            zones = ["America/New_York", "Europe/Paris", "Asia/Tokyo", "UTC"]
            with cur.copy(
                "COPY subscriber_engagement (subscriber_id, tenant_id, histogram, timezone, "
                "evidence) FROM STDIN"
            ) as copy:
                for i, sid in enumerate(ids):
                    hist = np.full(168, 0.1)
                    hist[int(peaks[i])] = 3.0
                    copy.write_row((sid, tenant_id, pack_histogram(hist), zones[i % 4], 10.0))


def million(env: dict[str, str], recipients: int, redis_url: str) -> None:
    from comms.campaigns import create_campaign, fire
    from comms.db import unit_of_work
    from comms.models import Campaign
    from comms.tenants import create_tenant

    with unit_of_work() as session:
        tenant, _ = create_tenant(session, "million")
        _subscribers(session, tenant.id, recipients, with_models=True)
        campaign = create_campaign(
            session, tenant.id, name="million", sender="news@example.com", subject="s",
            text="t", send_time_optimisation=True,
        )  # fmt: skip
        tenant_id, campaign_id = tenant.id, campaign.id
    client = redis.Redis.from_url(redis_url)
    client.config_resetstat()
    procs = _workers(env, "fanout", 2, 1)
    peak_rss = 0
    try:
        start = time.perf_counter()
        with unit_of_work() as session:
            fire(session, campaign_id, tenant_id)
        while True:
            peak_rss = max(peak_rss, _rss(procs))
            with unit_of_work() as session:
                done = session.get_one(Campaign, campaign_id).fanout_done
            if done or time.perf_counter() - start > 900:
                break
            time.sleep(0.5)
        elapsed = time.perf_counter() - start
    finally:
        _stop(procs)
    used = int(client.info("memory")["used_memory_peak"])
    client.close()
    print(f"(2) fan-out of {recipients:,} recipients with send-time optimisation")
    print(f"    time to write every delivery    {elapsed:8.1f} s  (target < 60)")
    print(f"    peak fan-out worker RSS         {peak_rss / 2**20:8.1f} MB (2 workers)")
    print(f"    Redis peak memory               {used / 2**20:8.1f} MB (target < 100)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--fanout", type=int, default=1_000_000)
    args = parser.parse_args()

    from comms.db import migrate
    from comms.devstack import DevStack
    from comms.endpoints import get_endpoints
    from comms.logging import configure_logging

    configure_logging("WARNING", "console")
    data_dir = ROOT / ".comms" / "bench-campaign"
    os.environ["COMMS_DATA_DIR"] = str(data_dir)
    stack = DevStack(data_dir)
    stack.destroy()
    endpoints = get_endpoints()
    migrate()
    env = {
        **os.environ,
        "COMMS_DATABASE_URL": endpoints.database_url,
        "COMMS_REDIS_URL": endpoints.redis_url,
        "COMMS_MASTER_KEYS": endpoints.master_keys or "",
        "COMMS_LOG_LEVEL": "WARNING",
    }
    try:
        throughput(env, args.recipients)
        if args.fanout:
            million(env, args.fanout, endpoints.redis_url)
    finally:
        stack.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
