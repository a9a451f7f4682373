"""``comms demo``: the whole fleet on one machine, a transactional send and a campaign.

Starts (and afterwards stops) the embedded PostgreSQL and Redis, a loopback
SMTP sink, worker processes and beat; prints what the sink actually received.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import insert

from comms.devsink import SinkHandler, SmtpSink

console = Console()


def _start(cmd: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 (closed when the process is reaped)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(recipients: int = 300, n_workers: int = 2, timeout: float = 120.0) -> int:
    from comms import client
    from comms.campaigns import create_campaign, fire, progress
    from comms.db import migrate, unit_of_work
    from comms.devstack import DevStack
    from comms.endpoints import get_endpoints
    from comms.logging import configure_logging
    from comms.messaging import find_message_id, message_status
    from comms.models import Subscriber
    from comms.provider_configs import create_provider_config
    from comms.settings import get_settings
    from comms.tenants import create_tenant

    configure_logging("WARNING", "console")  # the demo talks through its own output
    settings = get_settings()
    stack = DevStack(settings.data_dir)
    was_running = stack.status().get("postgres") == "running"
    console.print("[bold]1.[/] embedded PostgreSQL and Redis")
    endpoints = get_endpoints()
    migrate()
    log_dir = settings.data_dir / "demo"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "COMMS_DATABASE_URL": endpoints.database_url,
        "COMMS_REDIS_URL": endpoints.redis_url,
        "COMMS_MASTER_KEYS": endpoints.master_keys or "",
        "COMMS_SWEEP_INTERVAL_SECONDS": "1",
    }
    procs: list[subprocess.Popen[bytes]] = []
    handler = SinkHandler()
    sink = SmtpSink(handler)
    sink.start()
    try:
        console.print(f"[bold]2.[/] SMTP sink on 127.0.0.1:{sink.port}")
        comms_bin = [sys.executable, "-m", "comms.cli"]
        for i in range(n_workers):
            procs.append(
                _start(
                    [*comms_bin, "worker", "-c", "1", "-n", f"demo{i}@%h"],
                    log_dir / f"worker{i}.log",
                    env,
                )
            )
        procs.append(_start([*comms_bin, "beat"], log_dir / "beat.log", env))
        console.print(f"[bold]3.[/] {n_workers} worker processes and beat (logs in {log_dir})")

        with unit_of_work() as session:
            tenant, _key = create_tenant(session, f"demo-{uuid.uuid4().hex[:6]}")
            create_provider_config(
                session,
                kind="smtp",
                name="demo-sink",
                settings={"host": "127.0.0.1", "port": sink.port, "tls": "none"},
                tenant_id=tenant.id,
            )
            tenant_id = tenant.id
        console.print(f"[bold]4.[/] tenant {tenant_id} with its own SMTP provider (the sink)")

        idem = client.send_email(
            tenant_id=tenant_id,
            sender="billing@demo.example",
            to=["customer@demo.example"],
            subject="Your receipt",
            text="Thanks for your order.",
        )
        deadline = time.monotonic() + timeout
        transactional: dict[str, object] | None = None
        while time.monotonic() < deadline:
            with unit_of_work() as session:
                mid = find_message_id(session, tenant_id, idem)
                if mid is not None:
                    transactional = message_status(session, tenant_id, mid)
                    if transactional["recipients"][0]["status"] == "sent":  # type: ignore[index]
                        break
            time.sleep(0.2)
        first = transactional["recipients"][0] if transactional else {}  # type: ignore[index]
        console.print(
            f"[bold]5.[/] transactional email to {first.get('to')}: {first.get('status')} "
            f"(provider message id {first.get('provider_message_id')})"
        )

        with unit_of_work() as session:
            session.execute(
                insert(Subscriber),
                [
                    {
                        "id": uuid.uuid4(),
                        "tenant_id": tenant_id,
                        "email": f"reader{n:04d}@demo.example",
                        "fields": {"first_name": f"Reader {n}"},
                        "tags": ["newsletter"],
                    }
                    for n in range(recipients)
                ],
            )
            campaign = create_campaign(
                session,
                tenant_id,
                name="November newsletter",
                sender="news@demo.example",
                subject="Hello {{ first_name }}",
                text="Hi {{ first_name }}, here is what is new this month.",
                tags=["newsletter"],
            )
            campaign_id = campaign.id
        with unit_of_work() as session:
            fire(session, campaign_id, tenant_id)
        console.print(f"[bold]6.[/] campaign fired to {recipients} subscribers")

        columns = (
            TextColumn("campaign"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
        )  # fmt: skip
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("send", total=recipients, status="firing")
            while time.monotonic() < deadline:
                with unit_of_work() as session:
                    p = progress(session, campaign_id)
                bar.update(task, completed=p.settled, status=p.status)
                if p.status == "done":
                    break
                time.sleep(0.25)

        expected = recipients + 1
        handler.wait_for(expected, timeout=max(1.0, deadline - time.monotonic()))
        table = Table(title="summary")
        table.add_column("what")
        table.add_column("count", justify="right")
        for state, n in sorted(p.counts.items()):
            table.add_row(f"campaign deliveries {state}", str(n))
        table.add_row("messages the SMTP sink received", str(handler.count()))
        console.print(table)
        received = handler.count()
        distinct = len(set(handler.recipients()))
        console.print(f"[bold]{received} delivered[/] (sink saw {distinct} distinct recipients)")
        if received != expected or distinct != expected:
            console.print(f"[red]expected {expected} exactly once each[/]")
            return 1
        return 0
    finally:
        _stop(procs)
        sink.stop()
        if not was_running:
            stack.down()
            console.print("stopped the embedded PostgreSQL and Redis")
