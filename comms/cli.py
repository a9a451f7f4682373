"""The ``comms`` command line: dev stack, database, tenants, providers, sending, processes."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from typing import Any, NoReturn

import click

from comms.commands import CommandError
from comms.models import SuppressionReason as SuppressionReasonChoices


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        _fail(f"{what}: {value!r} is not a valid id (expected a UUID)", 2)


def _settings_pairs(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            _fail(f"--set {pair!r}: expected KEY=VALUE", 2)
        key, raw = pair.split("=", 1)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key.strip()] = value
    return out


@click.group()
@click.version_option(package_name="comms")
def main() -> None:
    """comms: multi-tenant email and SMS delivery on a Celery worker fleet."""
    from comms.logging import configure_logging
    from comms.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


# -- dev stack ---------------------------------------------------------------
@main.group()
def dev() -> None:
    """The embedded PostgreSQL and Redis under .comms/ (development)."""


@dev.command("up")
def dev_up() -> None:
    """Start the embedded PostgreSQL and Redis (idempotent)."""
    from comms.devstack import DevStack
    from comms.settings import get_settings

    info = DevStack(get_settings().data_dir).up()
    click.echo(f"postgres  {info.database_url}")
    click.echo(f"redis     {info.redis_url}")


@dev.command("status")
def dev_status() -> None:
    """Show whether the embedded services run."""
    from comms.devstack import DevStack
    from comms.settings import get_settings

    for key, value in DevStack(get_settings().data_dir).status().items():
        click.echo(f"{key:14} {value}")


@dev.command("down")
@click.option("--destroy", is_flag=True, help="Also delete the data under .comms/")
def dev_down(destroy: bool) -> None:
    """Stop the embedded services."""
    from comms.devstack import DevStack
    from comms.settings import get_settings

    stack = DevStack(get_settings().data_dir)
    if destroy:
        stack.destroy()
    else:
        stack.down()
    click.echo("stopped")


@dev.command("sink")
@click.option("--port", default=2525, show_default=True)
def dev_sink(port: int) -> None:
    """Run a loopback SMTP sink that prints what it receives."""
    from comms.devsink import SinkHandler, SmtpSink

    handler = SinkHandler()
    with SmtpSink(handler, port=port):
        click.echo(f"SMTP sink on 127.0.0.1:{port}; Ctrl-C to stop")
        seen = 0
        try:
            while True:
                handler.wait_for(seen + 1, timeout=1.0)
                for mail in handler.received[seen:]:
                    click.echo(f"{mail.recipients[0]}  {mail.subject}  {mail.message_id}")
                seen = len(handler.received)
        except KeyboardInterrupt:
            pass


# -- database ----------------------------------------------------------------
@main.group()
def db() -> None:
    """Schema migrations."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations up to REVISION (default: head)."""
    from comms.db import migrate

    migrate(revision)
    click.echo(f"database at {revision}")


# -- tenants -----------------------------------------------------------------
@main.group()
def tenant() -> None:
    """Tenants and API keys."""


@tenant.command("create")
@click.argument("name")
def tenant_create(name: str) -> None:
    """Create a tenant and print its id and a new API key (shown only once)."""
    from comms.db import unit_of_work
    from comms.tenants import create_tenant

    try:
        with unit_of_work() as session:
            row, key = create_tenant(session, name)
    except ValueError as exc:
        _fail(f"name: {exc}", 2)
    click.echo(f"tenant_id {row.id}")
    click.echo(f"api_key   {key.key}")
    click.echo("(store the key now: only its hash is kept)", err=True)


# -- providers ---------------------------------------------------------------
@main.group()
def providers() -> None:
    """Installed provider adaptors."""


@providers.command("list")
@click.option("--json", "as_json", is_flag=True)
def providers_list(as_json: bool) -> None:
    """List installed providers, their channel and settings schema."""
    from comms.providers import available_providers

    items: list[dict[str, Any]] = [
        {"name": name, "channel": cls.channel.value, "settings_schema": cls.settings_schema}
        for name, cls in sorted(available_providers().items())
    ]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for item in items:
        props = item["settings_schema"].get("properties", {})
        fields = ", ".join(f"{k}{'*' if v.get('secret') else ''}" for k, v in props.items())
        click.echo(f"{item['name']:10} {item['channel']:6} {fields}")
    click.echo("(* secret: stored encrypted, never shown)")


@main.group()
def provider() -> None:
    """Provider configurations (system defaults and tenants' own)."""


@provider.command("add")
@click.argument("kind")
@click.option("--name", required=True, help="A name unique per tenant")
@click.option("--tenant", "tenant_id", help="Tenant id; omit for a system default")
@click.option("--channel", type=click.Choice(["email", "sms"]))
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--set", "pairs", multiple=True, help="Setting KEY=VALUE (repeatable)")
def provider_add(
    kind: str,
    name: str,
    tenant_id: str | None,
    channel: str | None,
    priority: int,
    pairs: tuple[str, ...],
) -> None:
    """Save a provider configuration; secret settings are encrypted."""
    from sqlalchemy.exc import IntegrityError

    from comms.crypto import CryptoConfigError
    from comms.db import unit_of_work
    from comms.models import Channel
    from comms.provider_configs import create_provider_config, public_view
    from comms.providers import ConfigurationError

    owner = _uuid(tenant_id, "--tenant") if tenant_id else None
    try:
        with unit_of_work() as session:
            config = create_provider_config(
                session,
                kind=kind,
                name=name,
                settings=_settings_pairs(pairs),
                tenant_id=owner,
                channel=Channel(channel) if channel else None,
                priority=priority,
            )
            view = public_view(config)
    except ConfigurationError as exc:
        _fail(str(exc), 2)
    except CryptoConfigError as exc:
        _fail(str(exc))
    except IntegrityError:
        _fail(
            f"--name: a provider named {name!r} already exists for this owner, or no such tenant", 2
        )
    click.echo(json.dumps(view, indent=2))


@provider.command("list")
@click.option("--tenant", "tenant_id", help="Only this tenant's (default: all)")
def provider_list(tenant_id: str | None) -> None:
    """List provider configurations (secrets masked)."""
    from sqlalchemy import select

    from comms.db import unit_of_work
    from comms.models import ProviderConfig
    from comms.provider_configs import public_view

    with unit_of_work() as session:
        query = select(ProviderConfig).order_by(ProviderConfig.created_at)
        if tenant_id:
            query = query.where(ProviderConfig.tenant_id == _uuid(tenant_id, "--tenant"))
        views = [public_view(c) for c in session.scalars(query)]
    click.echo(json.dumps(views, indent=2))


def _config(session: Any, config_id: str, tenant_id: str | None) -> Any:
    from comms.models import ProviderConfig

    config = session.get(ProviderConfig, _uuid(config_id, "ID"))
    owner = _uuid(tenant_id, "--tenant") if tenant_id else None
    if config is None or (tenant_id is not None and config.tenant_id != owner):
        _fail(f"provider {config_id} does not exist" + (" for this tenant" if tenant_id else ""))
    return config


@provider.command("test")
@click.argument("config_id", metavar="ID")
@click.option("--tenant", "tenant_id", help="Refuse unless the provider belongs to this tenant")
def provider_test(config_id: str, tenant_id: str | None) -> None:
    """Check a provider's credentials with a harmless call."""
    from comms.db import unit_of_work
    from comms.provider_configs import check_provider

    with unit_of_work() as session:
        config = _config(session, config_id, tenant_id)
    ok, detail = check_provider(config)
    click.echo(("ok: " if ok else "problem: ") + detail)
    sys.exit(0 if ok else 1)


@provider.command("remove")
@click.argument("config_id", metavar="ID")
@click.option("--tenant", "tenant_id", help="Refuse unless the provider belongs to this tenant")
def provider_remove(config_id: str, tenant_id: str | None) -> None:
    """Delete a provider configuration."""
    from comms.db import unit_of_work

    with unit_of_work() as session:
        session.delete(_config(session, config_id, tenant_id))
    click.echo(f"removed {config_id}")


@main.group()
def keys() -> None:
    """Master keys for secrets at rest."""


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every stored secret under the first key of COMMS_MASTER_KEYS (resumable)."""
    from comms.crypto import CryptoConfigError, DecryptionError
    from comms.provider_configs import rotate_keys

    try:
        report = rotate_keys()
    except (CryptoConfigError, DecryptionError) as exc:
        _fail(str(exc))
    click.echo(f"re-wrapped {report.rewrapped}, already current {report.already_current}")


@tenant.command("operator-key")
@click.option("--name", default="operator", show_default=True)
def tenant_operator_key(name: str) -> None:
    """Create an operator API key (manages system default providers in the API)."""
    from comms.db import unit_of_work
    from comms.tenants import issue_operator_key

    with unit_of_work() as session:
        key = issue_operator_key(session, name)
    click.echo(f"api_key   {key.key}")
    click.echo("(store the key now: only its hash is kept)", err=True)


# -- sending -----------------------------------------------------------------
@main.group()
def send() -> None:
    """Send a message (published to the fleet like any producer would)."""


def _wait_and_show(tenant_id: uuid.UUID, key: str, timeout: float) -> None:
    from comms.db import unit_of_work
    from comms.deliveries import TERMINAL
    from comms.messaging import find_message_id, message_status
    from comms.models import DeliveryState

    deadline = time.monotonic() + timeout
    status: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        with unit_of_work() as session:
            message_id = find_message_id(session, tenant_id, key)
            if message_id is not None:
                status = message_status(session, tenant_id, message_id)
                states = {DeliveryState(r["status"]) for r in status["recipients"]}  # type: ignore[attr-defined]
                if states <= TERMINAL:
                    break
        time.sleep(0.2)
    if status is None:
        _fail(f"no worker accepted the message within {timeout:.0f}s (is `comms worker` running?)")
    click.echo(json.dumps(status, indent=2))


@send.command("email")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--from", "sender", required=True)
@click.option("--to", "to", multiple=True, required=True, help="Recipient (repeatable)")
@click.option("--subject", required=True)
@click.option("--text")
@click.option("--html")
@click.option("--reply-to")
@click.option("--idempotency-key")
@click.option("--wait", is_flag=True, help="Wait for the sends to settle and show them")
@click.option("--timeout", default=60.0, show_default=True)
def send_email(
    tenant_id: str,
    sender: str,
    to: tuple[str, ...],
    subject: str,
    text: str | None,
    html: str | None,
    reply_to: str | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Publish a comms.send_email command."""
    from comms import client

    tid = _uuid(tenant_id, "--tenant")
    try:
        key = client.send_email(
            tenant_id=tid, sender=sender, to=list(to), subject=subject, text=text, html=html,
            reply_to=reply_to, idempotency_key=idempotency_key,
        )  # fmt: skip
    except CommandError as exc:
        _fail("; ".join(f"{e['field']}: {e['message']}" for e in exc.errors), 2)
    click.echo(f"queued idempotency_key={key}")
    if wait:
        _wait_and_show(tid, key, timeout)


@send.command("sms")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--to", "to", multiple=True, required=True, help="E.164 number (repeatable)")
@click.option("--body", required=True)
@click.option("--from", "sender")
@click.option("--idempotency-key")
@click.option("--wait", is_flag=True)
@click.option("--timeout", default=60.0, show_default=True)
def send_sms(
    tenant_id: str,
    to: tuple[str, ...],
    body: str,
    sender: str | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Publish a comms.send_sms command."""
    from comms import client

    tid = _uuid(tenant_id, "--tenant")
    try:
        key = client.send_sms(
            tenant_id=tid, to=list(to), body=body, sender=sender, idempotency_key=idempotency_key
        )
    except CommandError as exc:
        _fail("; ".join(f"{e['field']}: {e['message']}" for e in exc.errors), 2)
    click.echo(f"queued idempotency_key={key}")
    if wait:
        _wait_and_show(tid, key, timeout)


@main.group()
def message() -> None:
    """Inspect messages."""


@message.command("show")
@click.argument("message_id")
@click.option("--tenant", "tenant_id", required=True)
def message_show(message_id: str, tenant_id: str) -> None:
    """Show a message and each recipient's status."""
    from comms.db import unit_of_work
    from comms.messaging import MessageNotFound, message_status

    try:
        with unit_of_work() as session:
            status = message_status(
                session, _uuid(tenant_id, "--tenant"), _uuid(message_id, "MESSAGE_ID")
            )
    except MessageNotFound as exc:
        _fail(str(exc))
    click.echo(json.dumps(status, indent=2))


# -- subscribers and campaigns -----------------------------------------------
def _command_errors(exc: CommandError) -> NoReturn:
    _fail("; ".join(f"{e['field']}: {e['message']}" for e in exc.errors[:20]), 2)


@main.group()
def subscribers() -> None:
    """Subscriber lists."""


@subscribers.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--tenant", "tenant_id", required=True)
def subscribers_import(path: str, tenant_id: str) -> None:
    """Import FILE.csv (header: email[,phone,timezone,tags,<merge fields>]); all rows or none."""
    from pathlib import Path

    from comms.db import unit_of_work
    from comms.subscribers import parse_csv, upsert_subscribers

    tid = _uuid(tenant_id, "--tenant")
    try:
        rows = parse_csv(Path(path).read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        _fail(f"{path}: not UTF-8 text", 2)
    except CommandError as exc:
        _command_errors(exc)
    with unit_of_work() as session:
        report = upsert_subscribers(session, tid, rows)
    click.echo(f"imported {report.written} subscribers ({report.received} rows)")


@main.group()
def campaign() -> None:
    """Campaigns: create, fire, watch, pause, resume, cancel."""


@campaign.command("create")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--name", required=True)
@click.option("--from", "sender", required=True)
@click.option("--subject", required=True)
@click.option("--text", help="Text body ({{ field }} merge fields)")
@click.option("--html", help="HTML body")
@click.option("--tag", "tags", multiple=True, help="Audience: subscribers with any of these tags")
@click.option("--send-time-optimisation/--send-now", default=False)
@click.option("--fallback-intro", help="Text for {{ ai_intro }}")
@click.option("--track/--no-track", default=False, help="Open pixel and click redirects (SMTP)")
def campaign_create(
    tenant_id: str, name: str, sender: str, subject: str, text: str | None, html: str | None,
    tags: tuple[str, ...], send_time_optimisation: bool, fallback_intro: str | None, track: bool,
) -> None:  # fmt: skip
    """Create a draft campaign and print its id."""
    from pydantic import ValidationError

    from comms.campaigns import CampaignIn, create_from
    from comms.commands import field_errors
    from comms.db import unit_of_work

    tid = _uuid(tenant_id, "--tenant")
    try:
        body = CampaignIn.model_validate(
            {"name": name, "from": sender, "subject": subject, "text": text, "html": html,
             "tags": list(tags), "send_time_optimisation": send_time_optimisation,
             "fallback_intro": fallback_intro, "tracking": track}
        )  # fmt: skip
    except ValidationError as exc:
        _command_errors(CommandError(field_errors(exc)))
    with unit_of_work() as session:
        row = create_from(session, tid, body)
    click.echo(f"campaign_id {row.id}")


def _campaign_action(verb: str, campaign_id: str, tenant_id: str) -> None:
    from comms import campaigns as c
    from comms.db import unit_of_work

    actions = {"fire": c.fire, "pause": c.pause, "resume": c.resume, "cancel": c.cancel}
    try:
        with unit_of_work() as session:
            actions[verb](session, _uuid(campaign_id, "CAMPAIGN_ID"), _uuid(tenant_id, "--tenant"))
    except c.CampaignError as exc:
        _fail(str(exc))
    click.echo(f"{verb}: ok")


for _verb, _help in [
    ("fire", "Start sending (a campaign fires once)."),
    ("pause", "Stop publishing; nothing is lost."),
    ("resume", "Continue a paused campaign."),
    ("cancel", "Cancel everything not yet sent."),
]:

    def _make(verb: str) -> Any:
        @click.argument("campaign_id")
        @click.option("--tenant", "tenant_id", required=True)
        def _cmd(campaign_id: str, tenant_id: str) -> None:
            _campaign_action(verb, campaign_id, tenant_id)

        return _cmd

    campaign.command(_verb, help=_help)(_make(_verb))


@campaign.command("status")
@click.argument("campaign_id")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--watch", is_flag=True, help="Show a live progress bar until the campaign ends")
def campaign_status(campaign_id: str, tenant_id: str, watch: bool) -> None:
    """Status and counts per delivery state."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from comms.campaigns import CampaignError, get_campaign, progress
    from comms.db import unit_of_work

    cid, tid = _uuid(campaign_id, "CAMPAIGN_ID"), _uuid(tenant_id, "--tenant")

    def read() -> Any:
        with unit_of_work() as session:
            get_campaign(session, cid, tid)
            return progress(session, cid)

    try:
        current = read()
    except CampaignError as exc:
        _fail(str(exc))
    if watch:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[status]}"))  # fmt: skip
        with Progress(*columns) as bar:
            task = bar.add_task("campaign", total=current.audience, status=current.status)
            while True:
                current = read()
                bar.update(task, completed=current.settled, total=current.audience,
                           status=current.status)  # fmt: skip
                if current.status in ("done", "cancelled"):
                    break
                time.sleep(0.5)
    click.echo(json.dumps(current.as_dict(), indent=2))


@main.group()
def suppression() -> None:
    """The suppression list (addresses never sent to)."""


@suppression.command("list")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--after", help="Keyset cursor: the last address of the previous page")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
def suppression_list(tenant_id: str, after: str | None, limit: int) -> None:
    """Tenant and platform-wide entries, by address."""
    from comms.db import unit_of_work
    from comms.suppression import list_entries

    with unit_of_work() as session:
        for e in list_entries(session, _uuid(tenant_id, "--tenant"), after=after, limit=limit):
            scope = "platform" if e.tenant_id is None else "tenant"
            click.echo(f"{e.address}\t{e.reason.value}\t{scope}\t{e.detail or ''}")


@suppression.command("add")
@click.argument("address")
@click.option("--tenant", "tenant_id", required=True)
@click.option(
    "--reason", type=click.Choice([r.value for r in SuppressionReasonChoices]), default="manual"
)
def suppression_add(address: str, tenant_id: str, reason: str) -> None:
    """Stop sending to ADDRESS."""
    from pydantic import EmailStr, TypeAdapter, ValidationError

    from comms.db import unit_of_work
    from comms.models import SuppressionReason
    from comms.suppression import suppress

    try:
        TypeAdapter(EmailStr).validate_python(address)
    except ValidationError:
        _fail(f"ADDRESS: {address!r} is not an email address", 2)
    with unit_of_work() as session:
        created = suppress(
            session, _uuid(tenant_id, "--tenant"), address, SuppressionReason(reason)
        )
    click.echo("added" if created else "already suppressed")


@suppression.command("remove")
@click.argument("address")
@click.option("--tenant", "tenant_id", required=True)
def suppression_remove(address: str, tenant_id: str) -> None:
    """Send to ADDRESS again (tenant entries only)."""
    from comms.db import unit_of_work
    from comms.suppression import unsuppress

    with unit_of_work() as session:
        removed = unsuppress(session, _uuid(tenant_id, "--tenant"), address)
    if not removed:
        _fail(f"{address} is not on this tenant's suppression list")
    click.echo("removed")


@main.group()
def sendtime() -> None:
    """Send-time optimisation, offline."""


@sendtime.command("predict")
@click.option(
    "--history",
    "history",
    required=True,
    type=click.File("r", encoding="utf-8"),
    help="JSON lines: subscriber, type (delivered|open|click|profile), at, machine, tz",
)
@click.option("--now", "now_text", required=True, help="ISO 8601, e.g. 2026-11-24T09:00:00Z")
@click.option("--cap-hours", type=click.FloatRange(0, 24), default=24.0, show_default=True)
def sendtime_predict(history: Any, now_text: str, cap_hours: float) -> None:
    """Print one {"subscriber", "send_at"} JSON line per subscriber seen."""
    from datetime import UTC, datetime, timedelta

    from schedulers.sendtime import predict_lines

    try:
        now = datetime.fromisoformat(now_text.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"--now: {now_text!r} is not an ISO 8601 timestamp", 2)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    try:
        for line in predict_lines(history, now.astimezone(UTC), timedelta(hours=cap_hours)):
            click.echo(line)
    except ValueError as exc:
        _fail(f"--history: {exc}", 2)


# -- processes ---------------------------------------------------------------
@main.group()
def inbound() -> None:
    """Replies: the SMTP listener, the parser, reply domains and consumers."""


@inbound.command("serve")
@click.option("--host", default=None, help="Default: COMMS_INBOUND_HOST")
@click.option("--port", type=int, default=None, help="Default: COMMS_INBOUND_PORT")
def inbound_serve(host: str | None, port: int | None) -> None:
    """Run the SMTP listener for reply+TOKEN@<reply domain> until stopped."""
    import signal
    import threading

    from comms.inbound.store import get_store
    from comms.settings import get_settings
    from workers.listener import ReplyListener, reconcile

    settings = get_settings()
    overrides: dict[str, Any] = {}
    if host:
        overrides["inbound_host"] = host
    if port is not None:
        overrides["inbound_port"] = port
    settings = settings.model_copy(update=overrides)
    store = get_store()
    republished = reconcile(store)
    listener = ReplyListener(settings, store)
    listener.start()
    click.echo(
        f"listening on {settings.inbound_host}:{listener.bound_port}"
        f" ({republished} stored message(s) republished)"
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    listener.stop()


@inbound.command("parse")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, default=True, help="One JSON object per file")
def inbound_parse(paths: tuple[str, ...], as_json: bool) -> None:
    """Parse raw messages (.eml) as the threading task would, one JSON line per file."""
    from pathlib import Path

    from comms.inbound.parser import parse_message

    for path in paths:
        parsed = parse_message(Path(path).read_bytes())
        click.echo(json.dumps({"file": path, **parsed.to_json()}, ensure_ascii=False))


@inbound.command("domain")
@click.argument("domain")
@click.option("--tenant", "tenant_id", required=True)
def inbound_domain(domain: str, tenant_id: str) -> None:
    """Accept replies for the tenant at reply+TOKEN@DOMAIN (point its MX at the listener)."""
    from comms.db import unit_of_work
    from comms.inbound.replies import InboundSettingError, set_reply_domain

    try:
        with unit_of_work() as session:
            set_reply_domain(session, _uuid(tenant_id, "--tenant"), domain)
    except InboundSettingError as exc:
        _fail(str(exc))
    click.echo(f"replies for tenant {tenant_id} arrive at reply+TOKEN@{domain.lower()}")


@inbound.command("consumer")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--url", required=True, help="Where each threaded reply is POSTed")
def inbound_consumer(tenant_id: str, url: str) -> None:
    """Set the tenant's reply consumer; prints the secret its signatures verify with."""
    from comms.db import unit_of_work
    from comms.inbound.replies import InboundSettingError, consumer_secret, set_consumer

    tid = _uuid(tenant_id, "--tenant")
    try:
        with unit_of_work() as session:
            released = set_consumer(session, tid, url)
    except InboundSettingError as exc:
        _fail(str(exc))
    click.echo(f"consumer set; {released} held repl(ies) will be forwarded")
    click.echo(
        f"signing secret (Comms-Signature, like the webhook provider): {consumer_secret(tid)}"
    )


@inbound.command("replies")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--kind", type=click.Choice(["reply", "auto_reply", "bounce", "spam"]))
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def inbound_replies(tenant_id: str, kind: str | None, limit: int) -> None:
    """The tenant's latest inbound messages, one JSON line each."""
    from comms.db import unit_of_work
    from comms.inbound.replies import list_replies, reply_view

    with unit_of_work() as session:
        for reply in list_replies(session, _uuid(tenant_id, "--tenant"), kind=kind, limit=limit):
            click.echo(json.dumps(reply_view(reply), ensure_ascii=False))


@main.group()
def domain() -> None:
    """Sending domains as code: add, records, publish, check, drift."""


def _domain(session: Any, domain_id: str, tenant_id: str | None) -> Any:
    from comms.models import Domain

    row = session.get(Domain, _uuid(domain_id, "ID"))
    if row is None or (tenant_id and str(row.tenant_id) != tenant_id):
        _fail(f"no domain {domain_id}")
    return row


@domain.command("add")
@click.argument("name")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--dns", "dns_kind", help="cloudflare|route53|rfc2136|manual (default: from NS)")
@click.option("--set", "pairs", multiple=True, help="DNS provider setting KEY=VALUE")
@click.option("--region", help="SES region (default: COMMS_DOMAIN_SES_REGION)")
def domain_add(
    name: str, tenant_id: str, dns_kind: str | None, pairs: tuple[str, ...], region: str | None
) -> None:
    """Create the SES identity and the expected records for NAME; prints its id."""
    from comms.db import unit_of_work
    from comms.domains.dns import DnsError
    from comms.domains.service import DomainError, add_domain, view

    try:
        with unit_of_work() as session:
            row = add_domain(
                session, _uuid(tenant_id, "--tenant"), name, dns_provider=dns_kind,
                dns_settings=_settings_pairs(pairs), region=region,
            )  # fmt: skip
            shown = view(row)
    except (DomainError, DnsError) as exc:
        _fail(str(exc))
    click.echo(json.dumps(shown, indent=2))


@domain.command("records")
@click.argument("domain_id", metavar="ID")
@click.option("--format", "fmt", type=click.Choice(["table", "zone", "json"]), default="table")
@click.option("--tenant", "tenant_id")
def domain_records(domain_id: str, fmt: str, tenant_id: str | None) -> None:
    """The records the domain needs, for publishing by hand."""
    from comms.db import unit_of_work
    from comms.domains.records import render
    from comms.domains.service import records_for

    with unit_of_work() as session:
        click.echo(render(records_for(_domain(session, domain_id, tenant_id)), fmt))


@domain.command("publish")
@click.argument("domain_id", metavar="ID")
@click.option("--tenant", "tenant_id")
def domain_publish(domain_id: str, tenant_id: str | None) -> None:
    """Create the records through the domain's DNS provider (ours only, idempotent)."""
    from comms.db import unit_of_work
    from comms.domains.dns import DnsError
    from comms.domains.service import publish

    try:
        with unit_of_work() as session:
            report = publish(session, _domain(session, domain_id, tenant_id))
    except DnsError as exc:
        _fail(str(exc))
    click.echo(json.dumps(report.to_json(), indent=2))


@domain.command("check")
@click.argument("domain_id", metavar="ID")
@click.option("--tenant", "tenant_id")
def domain_check(domain_id: str, tenant_id: str | None) -> None:
    """Query live DNS and SES, move the state, advise."""
    from comms.db import unit_of_work
    from comms.domains.dns import DnsError
    from comms.domains.service import check

    try:
        with unit_of_work() as session:
            report = check(session, _domain(session, domain_id, tenant_id))
    except DnsError as exc:
        _fail(str(exc))
    click.echo(json.dumps(report.to_json(), indent=2))


@domain.command("drift")
@click.argument("domain_id", metavar="ID", required=False)
@click.option("--tenant", "tenant_id")
def domain_drift(domain_id: str | None, tenant_id: str | None) -> None:
    """Run the drift check now (one domain, or every verified one as beat does)."""
    from comms.db import unit_of_work
    from comms.domains.service import drift, drift_all

    if domain_id is None:
        for report in drift_all():
            click.echo(json.dumps(report.to_json()))
        return
    with unit_of_work() as session:
        row = _domain(session, domain_id, tenant_id)
        click.echo(json.dumps(drift(session, row).to_json(), indent=2))


@domain.command("remove")
@click.argument("domain_id", metavar="ID")
@click.option("--tenant", "tenant_id")
def domain_remove(domain_id: str, tenant_id: str | None) -> None:
    """Delete our records (only ours), the SES identity if unshared, and the domain."""
    from comms.db import unit_of_work
    from comms.domains.service import remove

    with unit_of_work() as session:
        report = remove(session, _domain(session, domain_id, tenant_id))
    click.echo(json.dumps(report.to_json(), indent=2))


@domain.command("notify")
@click.option("--tenant", "tenant_id", required=True)
@click.option("--url", required=True, help="Where domain notices (drift, paused sync) are POSTed")
def domain_notify(tenant_id: str, url: str) -> None:
    """Set the tenant's notify URL; prints the secret its signatures verify with."""
    from comms.db import unit_of_work
    from comms.domains.service import notify_secret
    from comms.models import Tenant

    tid = _uuid(tenant_id, "--tenant")
    if not url.startswith(("http://", "https://")):
        _fail("the notify URL must be an http(s) URL")
    with unit_of_work() as session:
        tenant = session.get(Tenant, tid)
        if tenant is None:
            _fail(f"no tenant {tenant_id}")
        tenant.notify_url = url
    click.echo(f"signing secret (Comms-Signature): {notify_secret(tid)}")


@domain.command("dns")
@click.argument("domain_id", metavar="ID")
@click.argument("kind")
@click.option("--set", "pairs", multiple=True, help="Setting KEY=VALUE (secrets are sealed)")
@click.option("--tenant", "tenant_id")
def domain_dns(domain_id: str, kind: str, pairs: tuple[str, ...], tenant_id: str | None) -> None:
    """Save new DNS provider credentials (resumes a paused sync)."""
    from comms.db import unit_of_work
    from comms.domains.dns import DnsError
    from comms.domains.service import DomainError, set_dns

    try:
        with unit_of_work() as session:
            set_dns(session, _domain(session, domain_id, tenant_id), kind, _settings_pairs(pairs))
    except (DomainError, DnsError) as exc:
        _fail(str(exc))
    click.echo("saved; DNS sync resumes on the next publish or drift run")


def _exec_celery(args: list[str]) -> NoReturn:
    # resolve the embedded stack once here so every forked process shares the same URLs
    from comms.endpoints import get_endpoints

    endpoints = get_endpoints()
    os.environ.setdefault("COMMS_DATABASE_URL", endpoints.database_url)
    os.environ.setdefault("COMMS_REDIS_URL", endpoints.redis_url)
    if endpoints.master_keys:
        os.environ.setdefault("COMMS_MASTER_KEYS", endpoints.master_keys)
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", *args]
    os.execv(sys.executable, argv)  # noqa: S606 (becomes celery; argv is fixed by us)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--queues", "-Q", default="send,fanout,events,inbound,scheduled", show_default=True)
@click.option("--concurrency", "-c", type=int, default=2, show_default=True)
@click.option("--hostname", "-n", default=None)
@click.pass_context
def worker(ctx: click.Context, queues: str, concurrency: int, hostname: str | None) -> None:
    """Start a Celery worker for QUEUES (extra arguments go to celery)."""
    from comms.contract import QUEUES

    unknown = [q for q in queues.split(",") if q.strip() not in QUEUES]
    if unknown:
        _fail(f"--queues: unknown queue(s) {', '.join(unknown)}; known: {', '.join(QUEUES)}", 2)
    args = ["worker", "-Q", queues, "-c", str(concurrency), "--without-mingle", "--without-gossip"]
    if hostname:
        args += ["-n", hostname]
    _exec_celery([*args, *ctx.args])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def beat(ctx: click.Context) -> None:
    """Start celery beat (run exactly one per fleet)."""
    from comms.settings import get_settings

    schedule_file = get_settings().data_dir / "celerybeat-schedule"
    schedule_file.parent.mkdir(parents=True, exist_ok=True)
    _exec_celery(["beat", "-s", str(schedule_file), *ctx.args])


@main.command()
@click.option("--host", default=None, help="Default: COMMS_API_HOST")
@click.option("--port", type=int, default=None, help="Default: COMMS_API_PORT")
def api(host: str | None, port: int | None) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from comms.api import create_app
    from comms.settings import get_settings

    settings = get_settings()
    uvicorn.run(
        create_app(),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=None,
    )


@main.command()
@click.option("--recipients", default=300, show_default=True, help="Campaign audience size")
@click.option("--workers", "n_workers", default=2, show_default=True)
def demo(recipients: int, n_workers: int) -> None:
    """Run the fleet end to end on this machine and count what the SMTP sink received."""
    from comms.demo import run_demo

    sys.exit(run_demo(recipients=recipients, n_workers=n_workers))


if __name__ == "__main__":
    main()
