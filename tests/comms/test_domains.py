"""Domains as code, end to end on the local stack.

Live DNS is a real authoritative server on loopback (``tests/dnsfake.py``);
SES and Route 53 are a local moto server; Cloudflare is a local stand-in that
follows the v4 API shapes. moto limits worked around, through our real code
path: its sesv2 ``CreateEmailIdentity`` returns no DKIM tokens (we then ask
SES v1 ``VerifyDomainDkim``, as ``ses_identity`` does for any SES-compatible
endpoint lacking them), it has no ``PutEmailIdentityMailFromAttributes`` (we
fall back to v1 ``SetIdentityMailFromDomain``), and it reports an identity as
verified at once, so the DNS side decides the state here.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from comms.devstack import free_port
from comms.domains.records import (
    dmarc_strength,
    expected_records,
    parse_dmarc,
    render,
    spf_includes_ses,
    to_ascii,
)
from comms.domains.service import add_domain, check, drift, publish, records_for, set_dns
from comms.domains.ses_identity import reset_clients
from comms.models import Domain, DomainState, Event, Tenant
from comms.settings import reset_settings
from tests.cloudflare_standin import CloudflareStandIn
from tests.dnsfake import AuthoritativeDns
from tests.factories import TenantFactory

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # moto's Flask
ZONE = "acme.example"
TSIG_SECRET = base64.b64encode(b"k" * 32).decode()


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def dns_server() -> Iterator[AuthoritativeDns]:
    server = AuthoritativeDns(tsig_keys={"comms-key.": base64.b64decode(TSIG_SECRET)})
    server.add_zone(ZONE + ".")
    server.add_zone("bücher.example".encode("idna").decode() + ".")
    with server:
        yield server


@pytest.fixture
def env(
    stack: Any, moto_url: str, dns_server: AuthoritativeDns, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.setenv("COMMS_DOMAIN_SES_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("COMMS_DNS_NAMESERVERS", '["127.0.0.1"]')
    monkeypatch.setenv("COMMS_DNS_PORT", str(dns_server.port))
    monkeypatch.setenv("COMMS_INBOUND_MX_HOST", "inbound.comms.example")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("COMMS_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8")
    reset_settings()
    yield
    reset_settings()
    reset_clients()


def rfc2136_settings(dns_server: AuthoritativeDns) -> dict[str, Any]:
    """The rfc2136 provider's settings for the local server, with its TSIG key."""
    return {
        "server": "127.0.0.1", "port": dns_server.port, "zone": ZONE,
        "tsig_name": "comms-key.", "tsig_secret": TSIG_SECRET,
    }  # fmt: skip


@pytest.fixture
def cloudflare() -> Iterator[CloudflareStandIn]:
    standin = CloudflareStandIn(tokens={"good": {"*"}, "narrow": {"other.example"}})
    standin.add_zone(ZONE)
    with standin:
        yield standin


def _serve_cloudflare(cloudflare: CloudflareStandIn, dns: AuthoritativeDns) -> None:
    """What Cloudflare's nameservers would answer: the stand-in's records, live."""
    by_key: dict[tuple[str, str], list[str]] = {}
    for r in cloudflare.records(ZONE):
        value = str(r["content"])
        if r["type"] == "MX":
            value = f"{r.get('priority', 0)} {value}."
        elif r["type"] == "CNAME":
            value += "."
        by_key.setdefault((r["name"] + ".", r["type"]), []).append(value)
    for (name, rtype), values in by_key.items():
        dns.set(name, rtype, values)


# -- the record set ------------------------------------------------------------------
def test_the_expected_record_set_and_its_renderings() -> None:
    records = expected_records(
        "acme.example", region="eu-west-1", dkim_tokens=["t1", "t2", "t3"], challenge="c0ffee",
        rua="dmarc@comms.example", inbound_host="inbound.comms.example",
    )  # fmt: skip
    table = {(r.name, r.type): r.value for r in records}
    assert table[("t2._domainkey.acme.example", "CNAME")] == "t2.dkim.amazonses.com"
    assert table[("bounce.acme.example", "MX")] == "10 feedback-smtp.eu-west-1.amazonses.com"
    assert table[("news.acme.example", "MX")] == "10 inbound.comms.example"
    assert parse_dmarc(table[("_dmarc.acme.example", "TXT")]) == {
        "v": "DMARC1", "p": "quarantine", "rua": "mailto:dmarc@comms.example",
    }  # fmt: skip
    assert len(records) == 9
    zone = render(records, "zone")
    assert 'bounce.acme.example.\t3600\tIN\tTXT\t"v=spf1 include:amazonses.com ~all"' in zone
    assert "news.acme.example.\t3600\tIN\tMX\t10 inbound.comms.example." in zone
    assert '"purpose": "dkim"' in render(records, "json")


def test_names_are_punycode_and_policies_are_parsed_not_matched() -> None:
    assert to_ascii("Bücher.Example.") == "xn--bcher-kva.example"
    with pytest.raises(ValueError):
        to_ascii("no spaces.example")
    assert spf_includes_ses('"v=spf1 ip4:192.0.2.1 " "include:amazonses.com -all"')
    assert not spf_includes_ses("v=spf1 include:_spf.google.com ~all")
    weak = parse_dmarc("v=DMARC1;p=none; rua=mailto:x@y")
    assert weak is not None and dmarc_strength(weak) == 0
    partial = parse_dmarc("v=DMARC1; p=reject; pct=50")
    assert partial is not None and dmarc_strength(partial) == 1
    assert parse_dmarc("v=spf1 -all") is None


# -- through each DNS provider -------------------------------------------------------
def test_cloudflare_from_add_to_verified_and_idempotent(
    env: None, session: Session, cloudflare: CloudflareStandIn, dns_server: AuthoritativeDns
) -> None:
    tenant = TenantFactory()
    session.commit()
    domain = add_domain(
        session, tenant.id, ZONE, dns_provider="cloudflare",
        dns_settings={"api_token": "good", "base_url": cloudflare.base_url},
    )  # fmt: skip
    assert domain.state is DomainState.PENDING and len(domain.dkim_tokens) == 3
    assert domain.dns_secrets is not None and "good" not in str(domain.dns_secrets)

    report = publish(session, domain)
    assert len(report.created) == 9 and not report.conflicts
    assert domain.state is DomainState.VERIFYING
    again = publish(session, domain)  # idempotent: nothing created twice
    assert again.created == [] and len(again.unchanged) == 9
    assert len(cloudflare.records(ZONE)) == 9

    assert check(session, domain).state == "verifying"  # not in live DNS yet
    _serve_cloudflare(cloudflare, dns_server)
    result = check(session, domain)
    assert result.state == "verified", result.to_json()
    assert any("p=reject after 30 days" in a for a in result.advice)
    session.commit()
    assert session.get_one(Tenant, tenant.id).reply_domain == f"news.{ZONE}"


def test_a_revoked_token_pauses_sync_until_a_new_one_is_saved(
    env: None, session: Session, cloudflare: CloudflareStandIn
) -> None:
    tenant = TenantFactory()
    session.commit()
    domain = add_domain(
        session, tenant.id, ZONE, dns_provider="cloudflare",
        dns_settings={"api_token": "narrow", "base_url": cloudflare.base_url},
    )  # fmt: skip
    report = publish(session, domain)  # under-scoped: this zone is not in the token's set
    assert report.paused and "API token" in report.paused
    assert domain.sync_paused == report.paused and cloudflare.records(ZONE) == []
    assert publish(session, domain).paused  # stays paused, no calls in between
    assert any(n["type"] == "domain.sync_paused" for n in domain.findings["notices"])

    set_dns(session, domain, "cloudflare", {"api_token": "good", "base_url": cloudflare.base_url})
    assert domain.sync_paused is None
    assert len(publish(session, domain).created) == 9


def test_an_existing_mx_on_news_is_reported_never_overwritten(
    env: None, session: Session, cloudflare: CloudflareStandIn
) -> None:
    import httpx

    zone_id = httpx.get(
        f"{cloudflare.base_url}/zones", params={"name": ZONE},
        headers={"Authorization": "Bearer good"},
    ).json()["result"][0]["id"]  # fmt: skip
    httpx.post(
        f"{cloudflare.base_url}/zones/{zone_id}/dns_records",
        headers={"Authorization": "Bearer good"},
        json={"type": "MX", "name": f"news.{ZONE}", "content": "mx.elsewhere.example",
              "priority": 5, "ttl": 300},
    ).raise_for_status()  # fmt: skip
    tenant = TenantFactory()
    session.commit()
    domain = add_domain(
        session, tenant.id, ZONE, dns_provider="cloudflare",
        dns_settings={"api_token": "good", "base_url": cloudflare.base_url},
    )  # fmt: skip
    report = publish(session, domain)
    assert any("news.acme.example already has MX" in c for c in report.conflicts)
    mx = [
        r for r in cloudflare.records(ZONE) if r["type"] == "MX" and r["name"].startswith("news.")
    ]
    assert [r["content"] for r in mx] == ["mx.elsewhere.example"]  # untouched


def test_route53_from_add_to_verified(
    env: None, session: Session, moto_url: str, dns_server: AuthoritativeDns
) -> None:
    route53 = boto3.client("route53", region_name="us-east-1", endpoint_url=moto_url)
    zone_id = route53.create_hosted_zone(Name=ZONE, CallerReference=str(uuid.uuid4()))[
        "HostedZone"
    ]["Id"].split("/")[-1]
    tenant = TenantFactory()
    session.commit()
    domain = add_domain(
        session, tenant.id, ZONE, dns_provider="route53",
        dns_settings={"endpoint_url": moto_url, "hosted_zone_id": zone_id},
    )  # fmt: skip
    assert len(publish(session, domain).created) == 9
    assert publish(session, domain).created == []
    sets = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    for rrset in sets:  # what Route 53's nameservers would answer
        if rrset["Type"] in ("CNAME", "MX", "TXT"):
            values = [r["Value"] for r in rrset["ResourceRecords"]]
            if rrset["Type"] != "TXT":  # Route 53 values are absolute names
                values = [v if v.endswith(".") else v + "." for v in values]
            dns_server.set(rrset["Name"], rrset["Type"], values)
    report = check(session, domain)
    assert report.state == "verified", report.to_json()
    route53.close()


def test_rfc2136_from_add_to_verified_and_a_wrong_key_pauses(
    env: None, session: Session, dns_server: AuthoritativeDns
) -> None:
    tenant = TenantFactory()
    session.commit()
    settings = rfc2136_settings(dns_server)
    domain = add_domain(session, tenant.id, ZONE, dns_provider="rfc2136", dns_settings=settings)
    assert len(publish(session, domain).created) == 9
    assert check(session, domain).state == "verified"  # the server we updated is authoritative

    other = TenantFactory()
    session.commit()
    wrong = {**settings, "tsig_secret": base64.b64encode(b"x" * 32).decode()}
    theirs = add_domain(session, other.id, ZONE, dns_provider="rfc2136", dns_settings=wrong)
    assert publish(session, theirs).paused


def test_a_domain_verified_by_another_tenant_cannot_be_claimed(
    env: None, session: Session, dns_server: AuthoritativeDns
) -> None:
    owner, intruder = TenantFactory(), TenantFactory()
    session.commit()
    settings = rfc2136_settings(dns_server)
    mine = add_domain(session, owner.id, ZONE, dns_provider="rfc2136", dns_settings=settings)
    publish(session, mine)
    assert check(session, mine).state == "verified"
    session.commit()
    # same SES identity, same DKIM records in DNS: only the challenge tells them apart
    theirs = add_domain(session, intruder.id, ZONE, dns_provider="manual")
    assert theirs.findings["notes"]
    # real SES hands out the one identity's tokens again (moto makes new ones): align them
    theirs.dkim_tokens = list(mine.dkim_tokens)
    report = check(session, theirs)
    assert report.state == "verifying"
    missing = [f.record for f in report.findings if f.status == "missing"]
    assert missing == [f"_comms-challenge.{ZONE} TXT comms-verification={theirs.challenge}"]


def test_drift_repairs_a_missing_record_and_reports_a_weakened_policy(
    env: None, session: Session, dns_server: AuthoritativeDns
) -> None:
    tenant = TenantFactory()
    session.commit()
    settings = rfc2136_settings(dns_server)
    domain = add_domain(session, tenant.id, ZONE, dns_provider="rfc2136", dns_settings=settings)
    publish(session, domain)
    assert check(session, domain).state == "verified"

    dkim = f"{domain.dkim_tokens[0]}._domainkey.{ZONE}."
    dns_server.delete(dkim, "CNAME")  # minor drift: someone removed a DKIM record
    report = drift(session, domain)
    assert report.repaired == [f"{dkim[:-1]} CNAME {domain.dkim_tokens[0]}.dkim.amazonses.com"]
    assert dns_server.get(dkim, "CNAME") and report.state == "verified"

    dns_server.set(f"_dmarc.{ZONE}.", "TXT", ['"v=DMARC1; p=none"'])  # major: weakened
    report = drift(session, domain)
    assert report.state == "drifted" and report.major and report.repaired == []
    assert dns_server.get(f"_dmarc.{ZONE}.", "TXT") == ['"v=DMARC1; p=none"']  # untouched
    session.commit()
    kinds = set(session.scalars(select(Event.type).where(Event.tenant_id == tenant.id)))
    assert {"domain_repaired", "domain_drifted"} <= kinds


def test_domains_api(env: None, session: Session, dns_server: AuthoritativeDns) -> None:
    from comms.api import create_app
    from comms.tenants import create_tenant

    key = create_tenant(session, "api")[1].key
    other_key = create_tenant(session, "other")[1].key
    session.commit()
    client = TestClient(create_app())
    auth = {"Authorization": f"Bearer {key}"}
    created = client.post(
        "/v1/domains", headers=auth,
        json={"name": "bücher.example", "dns_provider": "rfc2136", "dns_settings": {
            "server": "127.0.0.1", "port": dns_server.port, "zone": "xn--bcher-kva.example",
            "tsig_name": "comms-key.", "tsig_secret": TSIG_SECRET}},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "xn--bcher-kva.example" and body["unicode_name"] == "bücher.example"
    assert "tsig_secret" not in str(body) and TSIG_SECRET not in created.text
    domain_id = body["id"]
    zone = client.get(f"/v1/domains/{domain_id}/records?format=zone", headers=auth)
    assert "_dmarc.xn--bcher-kva.example." in zone.text
    assert client.post(f"/v1/domains/{domain_id}:publish", headers=auth).status_code == 200
    checked = client.post(f"/v1/domains/{domain_id}:check", headers=auth).json()
    assert checked["check"]["state"] == "verified"
    hidden = client.get(
        f"/v1/domains/{domain_id}", headers={"Authorization": f"Bearer {other_key}"}
    )
    assert hidden.status_code == 404
    bad = client.post("/v1/domains", headers=auth, json={"name": "not a domain"})
    assert bad.status_code == 422
    assert len(records_for(session.get_one(Domain, uuid.UUID(domain_id)))) == 9


def test_the_dns_provider_is_suggested_from_ns_records(
    env: None, dns_server: AuthoritativeDns
) -> None:
    from comms.domains.dns import suggest_provider

    dns_server.set(f"{ZONE}.", "NS", ["lara.ns.cloudflare.com.", "greg.ns.cloudflare.com."])
    assert suggest_provider(f"mail.{ZONE}") == "cloudflare"  # found at the parent zone
    dns_server.set(f"{ZONE}.", "NS", ["ns-12.awsdns-01.com.", "ns-900.awsdns-40.net."])
    assert suggest_provider(ZONE) == "route53"
    dns_server.set(f"{ZONE}.", "NS", ["ns1.example-host.net."])
    assert suggest_provider(ZONE) == "manual"


class _Receiver:
    """A local HTTP endpoint that keeps what it is sent (the tenant's notify URL)."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_major_drift_is_notified_signed_and_a_fix_restores_verified(
    env: None, session: Session, dns_server: AuthoritativeDns
) -> None:
    import json

    from comms.domains.service import notify_secret
    from comms.providers.webhook import verify

    tenant = TenantFactory()
    session.commit()
    receiver = _Receiver()
    try:
        session.get_one(Tenant, tenant.id).notify_url = receiver.url
        settings = rfc2136_settings(dns_server)
        domain = add_domain(session, tenant.id, ZONE, dns_provider="rfc2136", dns_settings=settings)
        publish(session, domain)
        assert check(session, domain).state == "verified"
        session.commit()

        dns_server.set(f"news.{ZONE}.", "MX", ["10 mx.elsewhere.example."])  # moved away
        report = drift(session, domain)
        assert report.state == "drifted" and "MX is 10 mx.elsewhere.example" in report.major[0]
        headers, body = receiver.received[-1]
        assert verify(notify_secret(tenant.id), body, headers["Comms-Signature"])
        assert json.loads(body)["type"] == "domain.drifted"

        dns_server.set(f"news.{ZONE}.", "MX", ["10 inbound.comms.example."])  # the tenant fixes it
        assert drift(session, domain).state == "verified"
    finally:
        receiver.close()


def test_cli_takes_a_domain_from_add_to_verified(
    env: None, session: Session, dns_server: AuthoritativeDns
) -> None:
    import json

    from click.testing import CliRunner

    from comms.cli import main

    tenant = TenantFactory()
    session.commit()
    runner = CliRunner()
    added = runner.invoke(main, [
        "domain", "add", ZONE, "--tenant", str(tenant.id), "--dns", "rfc2136",
        "--set", "server=127.0.0.1", "--set", f"port={dns_server.port}", "--set", f"zone={ZONE}",
        "--set", "tsig_name=comms-key.", "--set", f"tsig_secret={TSIG_SECRET}",
    ])  # fmt: skip
    assert added.exit_code == 0, added.output
    assert TSIG_SECRET not in added.output
    domain_id = json.loads(added.stdout)["id"]
    zone = runner.invoke(main, ["domain", "records", domain_id, "--format", "zone"])
    assert f"_dmarc.{ZONE}.\t3600\tIN\tTXT" in zone.stdout
    published = runner.invoke(main, ["domain", "publish", domain_id])
    assert len(json.loads(published.stdout)["created"]) == 9
    checked = runner.invoke(main, ["domain", "check", domain_id])
    assert json.loads(checked.stdout)["state"] == "verified"
    missing = runner.invoke(main, ["domain", "check", str(uuid.uuid4())])
    assert missing.exit_code != 0 and "no domain" in missing.output


def test_unpublish_deletes_only_our_records(
    env: None, session: Session, cloudflare: CloudflareStandIn
) -> None:
    from comms.domains.service import unpublish

    tenant = TenantFactory()
    session.commit()
    domain = add_domain(
        session, tenant.id, ZONE, dns_provider="cloudflare",
        dns_settings={"api_token": "good", "base_url": cloudflare.base_url},
    )  # fmt: skip
    import httpx

    zone_id = cloudflare.add_zone(ZONE)
    httpx.post(
        f"{cloudflare.base_url}/zones/{zone_id}/dns_records",
        headers={"Authorization": "Bearer good"},
        json={"type": "TXT", "name": ZONE, "content": "google-site-verification=abc", "ttl": 300},
    ).raise_for_status()
    publish(session, domain)
    assert len(cloudflare.records(ZONE)) == 10
    assert unpublish(domain) == 9
    assert [r["content"] for r in cloudflare.records(ZONE)] == ["google-site-verification=abc"]


def test_removing_a_domain_deletes_our_records_and_an_unshared_identity(
    env: None, session: Session, cloudflare: CloudflareStandIn, moto_url: str
) -> None:
    from comms.api import create_app
    from comms.tenants import create_tenant

    tenant, key = create_tenant(session, "leaving")
    domain = add_domain(
        session, tenant.id, ZONE, dns_provider="cloudflare",
        dns_settings={"api_token": "good", "base_url": cloudflare.base_url},
    )  # fmt: skip
    publish(session, domain)
    session.commit()
    domain_id = domain.id
    client = TestClient(create_app())
    answer = client.delete(
        f"/v1/domains/{domain_id}", headers={"Authorization": f"Bearer {key.key}"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"unpublished": 9, "identity_deleted": True, "note": ""}
    assert cloudflare.records(ZONE) == []
    ses = boto3.client("sesv2", region_name="us-east-1", endpoint_url=moto_url)
    names = [i["IdentityName"] for i in ses.list_email_identities()["EmailIdentities"]]
    ses.close()
    assert ZONE not in names
    session.expire_all()
    assert session.get(Domain, domain_id) is None
