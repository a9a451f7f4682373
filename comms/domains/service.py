"""A domain's life: add, publish, check, drift.

``pending`` (identity created, records known) → ``verifying`` (records
published or handed to a person) → ``verified`` (every record in live DNS,
SES satisfied, the tenant's challenge present) ; ``failed`` when SES gives up;
``drifted`` when a verified domain's DNS was weakened by someone else.

Sync with a DNS provider only ever changes or deletes records listed in
``Domain.published`` (the ones we created). A record that exists with other
content and is not ours is a *conflict*: reported, never overwritten (an MX
on ``news.`` already pointing elsewhere, a DMARC record the tenant wrote).

Drift (the weekly beat job): a missing record is *minor* and is published
again; a weakened DMARC policy, an MX of ``news.`` that points elsewhere or an
SPF record that lost our include is *major*: reported to the tenant (an event
and a signed POST to its notify URL) and the domain marked ``drifted``, their
DNS untouched.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from comms.crypto import get_keyring
from comms.domains import ses_identity
from comms.domains.dns import (
    DnsAuthError,
    DnsError,
    DnsProvider,
    ManualDns,
    dns_provider_class,
    lookup,
    normalise,
    suggest_provider,
)
from comms.domains.records import (
    Record,
    dmarc_strength,
    expected_records,
    parse_dmarc,
    parse_spf,
    spf_includes_ses,
    to_ascii,
)
from comms.models import Domain, DomainState, Event, Tenant
from comms.settings import get_settings

log = structlog.get_logger(__name__)
S = DomainState


class DomainError(ValueError):
    pass


def records_for(domain: Domain) -> list[Record]:
    settings = get_settings()
    return expected_records(
        domain.name, region=domain.region, dkim_tokens=list(domain.dkim_tokens),
        challenge=domain.challenge, rua=settings.dmarc_rua, inbound_host=settings.inbound_mx_host,
    )  # fmt: skip


def _split_settings(kind: str, given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    cls = dns_provider_class(kind)
    known = set(cls.settings_schema.get("properties", {}))
    unknown = set(given) - known
    if unknown:
        raise DomainError(f"{kind}: unknown setting(s) {', '.join(sorted(unknown))}")
    secret = {k: v for k, v in given.items() if k in cls.secret_fields()}
    plain = {k: v for k, v in given.items() if k not in secret}
    return plain, secret


def provider_for(domain: Domain) -> DnsProvider:
    settings = dict(domain.dns_settings)
    if domain.dns_secrets:
        settings.update(
            get_keyring().decrypt_json(
                domain.dns_secrets, tenant_id=domain.tenant_id, record_id=domain.id
            )
        )
    return dns_provider_class(domain.dns_provider)(settings)


def set_dns(session: Session, domain: Domain, kind: str, given: dict[str, Any]) -> None:
    """Save the DNS provider and its credentials (secrets sealed); resumes a paused sync."""
    plain, secret = _split_settings(kind, given)
    dns_provider_class(kind)({**plain, **secret})  # required settings present
    domain.dns_provider = kind
    domain.dns_settings = plain
    domain.dns_secrets = (
        get_keyring().encrypt_json(secret, tenant_id=domain.tenant_id, record_id=domain.id)
        if secret
        else None
    )
    domain.sync_paused = None


def add_domain(
    session: Session,
    tenant_id: uuid.UUID,
    name: str,
    *,
    dns_provider: str | None = None,
    dns_settings: dict[str, Any] | None = None,
    region: str | None = None,
) -> Domain:
    try:
        ascii_name = to_ascii(name)
    except ValueError as exc:
        raise DomainError(str(exc)) from None
    if session.scalar(
        select(Domain.id).where(Domain.tenant_id == tenant_id, Domain.name == ascii_name)
    ):
        raise DomainError(f"{ascii_name} is already one of your domains")
    region = region or get_settings().domain_ses_region
    domain = Domain(
        id=uuid.uuid4(), tenant_id=tenant_id, name=ascii_name, region=region,
        state=S.PENDING, challenge=secrets.token_hex(16), dkim_tokens=[],
        dns_provider="manual", dns_settings={}, published=[], findings={},
    )  # fmt: skip
    kind = dns_provider or suggest_provider(ascii_name)
    set_dns(session, domain, kind, dns_settings or {})
    try:
        domain.dkim_tokens = ses_identity.create_identity(ascii_name, region)
        ses_identity.set_mail_from(ascii_name, region)
    except ses_identity.SesIdentityError as exc:
        raise DomainError(str(exc)) from None
    claimed = session.scalar(
        select(Domain.id).where(
            Domain.name == ascii_name, Domain.tenant_id != tenant_id, Domain.state == S.VERIFIED
        )
    )
    domain.findings = {
        "notes": (
            ["another tenant has verified this domain: yours verifies only with your own "
             f"_comms-challenge.{ascii_name} record"] if claimed else []
        ),
    }  # fmt: skip
    session.add(domain)
    session.flush()
    return domain


# -- publishing ------------------------------------------------------------------
@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)
    paused: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "created": self.created, "updated": self.updated, "unchanged": self.unchanged,
            "conflicts": self.conflicts, "manual": self.manual, "paused": self.paused,
        }  # fmt: skip


def _label(record: Record) -> str:
    return f"{record.name} {record.type} {record.value}"


def _exclusive(record: Record) -> bool:
    """Record kinds that may exist once per name: another value there is a conflict."""
    if record.type in ("CNAME", "MX"):
        return True
    return record.purpose in ("dmarc", "mail-from-spf", "reply-spf")  # one SPF/DMARC per name


def sync(domain: Domain, records: list[Record] | None = None) -> SyncReport:
    """Make the provider hold ``records`` (default: all), touching only our own."""
    report = SyncReport()
    if domain.sync_paused:
        report.paused = domain.sync_paused
        return report
    provider = provider_for(domain)
    ours = {str(p["id"]): p for p in domain.published}
    published = list(domain.published)
    try:
        for record in records or records_for(domain):
            existing = provider.find(domain.name, record.name, record.type)
            wanted = normalise(record.type, record.value)
            if any(normalise(e.type, e.value) == wanted for e in existing):
                report.unchanged.append(_label(record))
                continue
            mine = [e for e in existing if e.id in ours]
            foreign = [e for e in existing if e.id not in ours]
            if mine:
                new_id = provider.update(domain.name, mine[0].id, record)
                published = [p for p in published if p["id"] != mine[0].id]
                published.append({"id": new_id, **record.to_json()})
                report.updated.append(_label(record))
            elif foreign and _exclusive(record):
                if record.purpose == "reply-mx":
                    report.conflicts.append(
                        f"news.{domain.name} already has MX {', '.join(e.value for e in foreign)}:"
                        " replies need it to point at us; not overwritten"
                    )
                else:
                    report.conflicts.append(
                        f"{record.name} {record.type} already holds "
                        f"{', '.join(e.value for e in foreign)}; not overwritten"
                    )
            else:
                try:
                    new_id = provider.create(domain.name, record)
                except ManualDns:
                    report.manual.append(_label(record))
                    continue
                published.append({"id": new_id, **record.to_json()})
                report.created.append(_label(record))
    except DnsAuthError as exc:
        domain.sync_paused = str(exc)
        report.paused = str(exc)
        _notify(domain, "domain.sync_paused", {"reason": str(exc)})
    finally:
        domain.published = published
        provider.close()
    return report


def publish(session: Session, domain: Domain) -> SyncReport:
    report = sync(domain)
    if domain.state is S.PENDING and not report.paused:
        domain.state = S.VERIFYING
    domain.updated_at = datetime.now(UTC)
    return report


def unpublish(domain: Domain) -> int:
    """Delete every record we created (and only those); returns how many."""
    provider = provider_for(domain)
    removed = 0
    try:
        for entry in list(domain.published):
            try:
                provider.delete(domain.name, str(entry["id"]))
            except ManualDns:
                continue
            removed += 1
    finally:
        provider.close()
    domain.published = []
    return removed


@dataclass
class RemoveReport:
    unpublished: int
    identity_deleted: bool
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "unpublished": self.unpublished, "identity_deleted": self.identity_deleted,
            "note": self.note,
        }  # fmt: skip


def remove(session: Session, domain: Domain) -> RemoveReport:
    """Delete our records (only ours), the SES identity if no other tenant uses it, the row."""
    note = ""
    try:
        removed = 0 if domain.sync_paused else unpublish(domain)
    except DnsError as exc:
        removed, note = 0, f"records left in place: {exc}"
    if domain.sync_paused:
        note = f"records left in place: DNS sync is paused ({domain.sync_paused})"
    shared = session.scalar(
        select(Domain.id).where(Domain.name == domain.name, Domain.id != domain.id).limit(1)
    )
    deleted = False
    if shared is None:
        try:
            ses_identity.delete_identity(domain.name, domain.region)
            deleted = True
        except ses_identity.SesIdentityError as exc:
            note = (note + "; " if note else "") + str(exc)
    tenant = session.get_one(Tenant, domain.tenant_id)
    if tenant.reply_domain == f"news.{domain.name}":
        tenant.reply_domain = None  # replies to it are no longer accepted
    session.delete(domain)
    return RemoveReport(removed, deleted, note)


# -- checking ----------------------------------------------------------------------
@dataclass
class Finding:
    record: str
    status: str  # ok | missing | weakened | elsewhere | conflict
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"record": self.record, "status": self.status, "detail": self.detail}


def inspect(domain: Domain) -> list[Finding]:
    """Compare live DNS with the expected record set, record by record."""
    findings: list[Finding] = []
    for record in records_for(domain):
        live = lookup(record.name, record.type)
        wanted = normalise(record.type, record.value)
        label = _label(record)
        if record.purpose == "dmarc":
            policies = [t for t in (parse_dmarc(v) for v in live) if t is not None]
            if not policies:
                findings.append(Finding(label, "missing"))
            elif dmarc_strength(policies[0]) < 1:
                findings.append(
                    Finding(label, "weakened", f"DMARC policy is p={policies[0].get('p')}")
                )
            else:
                findings.append(Finding(label, "ok", f"p={policies[0].get('p')}"))
            continue
        if record.purpose in ("mail-from-spf", "reply-spf"):
            spf = [v for v in live if parse_spf(v) is not None]
            if not spf:
                findings.append(Finding(label, "missing"))
            elif not any(spf_includes_ses(v) for v in spf):
                findings.append(Finding(label, "weakened", f"SPF lost {record.value.split()[1]}"))
            else:
                findings.append(Finding(label, "ok"))
            continue
        if any(normalise(record.type, v) == wanted for v in live):
            findings.append(Finding(label, "ok"))
        elif live and record.purpose == "reply-mx":
            findings.append(Finding(label, "elsewhere", f"MX is {', '.join(live)}"))
        elif live and record.type == "CNAME":
            findings.append(Finding(label, "conflict", f"CNAME is {', '.join(live)}"))
        else:
            findings.append(Finding(label, "missing"))
    return findings


MAJOR = frozenset({"weakened", "elsewhere", "conflict"})


@dataclass
class CheckReport:
    state: str
    ses: str
    findings: list[Finding]
    advice: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state, "ses": self.ses, "advice": self.advice,
            "findings": [f.to_json() for f in self.findings],
        }  # fmt: skip


def _advice(domain: Domain, findings: list[Finding]) -> list[str]:
    advice = []
    dmarc = next((f for f in findings if f.record.startswith(f"_dmarc.{domain.name} ")), None)
    if dmarc is not None and dmarc.status == "ok" and "p=quarantine" in dmarc.detail:
        since = domain.verified_at
        if since is not None and datetime.now(UTC) - since >= timedelta(days=30):
            advice.append("30 days verified without DMARC trouble: consider p=reject")
        else:
            advice.append(
                "DMARC starts at p=quarantine; move to p=reject after 30 days without failures"
            )
    if domain.sync_paused:
        advice.append(f"DNS sync paused: {domain.sync_paused}; save new credentials to resume")
    return advice


def check(session: Session, domain: Domain) -> CheckReport:
    """Query live DNS and SES and move the state accordingly."""
    findings = inspect(domain)
    try:
        ses = ses_identity.identity_status(domain.name, domain.region)
    except ses_identity.SesIdentityError as exc:
        ses = f"unknown ({exc})"
    all_ok = all(f.status == "ok" for f in findings)
    now = datetime.now(UTC)
    if ses == "failed":
        domain.state = S.FAILED
    elif all_ok and ses == "verified":
        if domain.state is not S.VERIFIED:
            domain.verified_at = now
        domain.state = S.VERIFIED
        tenant = session.get_one(Tenant, domain.tenant_id)
        reply_domain = f"news.{domain.name}"
        taken = session.scalar(select(Tenant.id).where(Tenant.reply_domain == reply_domain))
        if tenant.reply_domain is None and taken is None:
            tenant.reply_domain = reply_domain  # replies to this tenant's mail come back here
    elif domain.state is S.VERIFIED and any(f.status in MAJOR for f in findings):
        domain.state = S.DRIFTED
    elif domain.state in (S.PENDING, S.FAILED):
        domain.state = S.VERIFYING
    domain.checked_at = now
    domain.findings = {**domain.findings, "last_check": [f.to_json() for f in findings]}
    return CheckReport(domain.state.value, ses, findings, _advice(domain, findings))


# -- drift ---------------------------------------------------------------------------
@dataclass
class DriftReport:
    domain: str
    repaired: list[str]
    major: list[str]
    state: str
    paused: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain, "repaired": self.repaired, "major": self.major,
            "state": self.state, "paused": self.paused,
        }  # fmt: skip


def drift(session: Session, domain: Domain) -> DriftReport:
    """Re-check a verified (or drifted) domain: repair what is missing, report what was weakened."""
    findings = inspect(domain)
    missing = {f.record for f in findings if f.status == "missing"}
    major = [f"{f.record}: {f.detail or f.status}" for f in findings if f.status in MAJOR]
    repaired: list[str] = []
    paused = None
    if missing:
        to_publish = [r for r in records_for(domain) if _label(r) in missing]
        report = sync(domain, to_publish)
        repaired = report.created + report.updated
        paused = report.paused
    domain.checked_at = datetime.now(UTC)
    domain.findings = {**domain.findings, "last_drift": {"repaired": repaired, "major": major}}
    if major:
        if domain.state is not S.DRIFTED:
            domain.state = S.DRIFTED
            _record_event(session, domain, "domain_drifted", {"major": major})
            _notify(domain, "domain.drifted", {"major": major})
    elif domain.state is S.DRIFTED:
        domain.state = S.VERIFIED
        _record_event(session, domain, "domain_restored", {})
    if repaired:
        _record_event(session, domain, "domain_repaired", {"records": repaired})
    log.info("domain.drift", domain=domain.name, repaired=len(repaired), major=len(major))
    return DriftReport(domain.name, repaired, major, domain.state.value, paused)


def drift_all(limit: int = 500) -> list[DriftReport]:
    """The beat job: every verified or drifted domain, one transaction each."""
    from comms.db import unit_of_work

    with unit_of_work() as session:
        ids = list(
            session.scalars(
                select(Domain.id)
                .where(Domain.state.in_([S.VERIFIED, S.DRIFTED]))
                .order_by(Domain.checked_at.nulls_first())
                .limit(limit)
            )
        )
    reports = []
    for domain_id in ids:
        try:
            with unit_of_work() as session:
                domain = session.get_one(Domain, domain_id, with_for_update={"skip_locked": True})
                reports.append(drift(session, domain))
        except DnsError as exc:
            log.warning("domain.drift_failed", domain_id=str(domain_id), error=str(exc))
    return reports


def _record_event(session: Session, domain: Domain, type_: str, data: dict[str, Any]) -> None:
    session.add(
        Event(
            id=uuid.uuid4(), tenant_id=domain.tenant_id, delivery_id=None, type=type_,
            data={"domain": domain.name, "domain_id": str(domain.id), **data},
        )
    )  # fmt: skip


def notify_secret(tenant_id: uuid.UUID) -> str:
    """The secret a tenant's notify URL verifies our signature with (derived, never stored)."""
    from comms.links import tenant_secret

    return tenant_secret(b"notify", tenant_id)


def _notify(domain: Domain, kind: str, data: dict[str, Any]) -> None:
    """A signed POST to the tenant's notify URL, best effort (the event is the record)."""
    from comms.db import unit_of_work
    from comms.providers.webhook import post_signed

    with unit_of_work() as session:
        url = session.scalar(select(Tenant.notify_url).where(Tenant.id == domain.tenant_id))
    notices = list(domain.findings.get("notices", []))[-19:]
    notices.append({"type": kind, "at": datetime.now(UTC).isoformat(), **data})
    domain.findings = {**domain.findings, "notices": notices}
    if not url:
        return
    body = json.dumps({"type": kind, "domain": domain.name, **data}).encode()
    try:
        post_signed(url, body, notify_secret(domain.tenant_id), timeout=10)
    except Exception as exc:  # the notice is also kept on the domain
        log.warning("domain.notify_failed", error=f"{type(exc).__name__}: {exc}")


def view(domain: Domain) -> dict[str, Any]:
    return {
        "id": str(domain.id),
        "name": domain.name,
        "unicode_name": _unicode(domain.name),
        "region": domain.region,
        "state": domain.state.value,
        "dns_provider": domain.dns_provider,
        "dns_settings": domain.dns_settings,  # secrets are never shown
        "dns_sync_paused": domain.sync_paused,
        "published": len(domain.published),
        "findings": domain.findings,
        "checked_at": domain.checked_at.isoformat() if domain.checked_at else None,
        "verified_at": domain.verified_at.isoformat() if domain.verified_at else None,
    }


def _unicode(name: str) -> str:
    try:
        return name.encode("ascii").decode("idna")
    except UnicodeError:
        return name
