"""RFC 2136 against a real BIND 9 (``named``): publish, verify, repair drift.

Skipped when BIND is not installed (Debian: ``apt-get install bind9``; CI installs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.query
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest
from sqlalchemy.orm import Session

from comms.devstack import free_port
from comms.domains.dns import lookup
from comms.domains.service import add_domain, check, drift, publish
from comms.domains.ses_identity import reset_clients
from comms.settings import reset_settings
from tests.bindserver import KEY_NAME, SECRET, ZONE, bind_server, named_binary
from tests.factories import TenantFactory

pytestmark = [
    pytest.mark.skipif(named_binary() is None, reason="BIND 9 (named) is not installed"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # moto's Flask
]


@pytest.fixture
def bind_port(tmp_path: Path) -> Iterator[int]:
    with bind_server(tmp_path / "bind") as port:
        yield port


@pytest.fixture
def env(
    stack: Any, bind_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    monkeypatch.setenv("COMMS_DOMAIN_SES_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("COMMS_DNS_NAMESERVERS", '["127.0.0.1"]')
    monkeypatch.setenv("COMMS_DNS_PORT", str(bind_port))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    reset_settings()
    yield
    reset_settings()
    reset_clients()
    moto.stop()


def test_rfc2136_against_bind_publishes_verifies_and_repairs(
    env: None, session: Session, bind_port: int
) -> None:
    tenant = TenantFactory()
    session.commit()
    settings = {
        "server": "127.0.0.1", "port": bind_port, "zone": ZONE,
        "tsig_name": KEY_NAME, "tsig_secret": SECRET,
    }  # fmt: skip
    domain = add_domain(session, tenant.id, ZONE, dns_provider="rfc2136", dns_settings=settings)
    report = publish(session, domain)
    assert len(report.created) == 9 and not report.paused, report.to_json()
    assert publish(session, domain).created == []  # idempotent against a real server
    assert check(session, domain).state == "verified"

    # someone deletes our DMARC-less neighbour: a DKIM CNAME (minor drift)
    name = f"{domain.dkim_tokens[1]}._domainkey.{ZONE}."
    update = dns.update.Update(
        ZONE, keyring=dns.tsigkeyring.from_text({KEY_NAME: SECRET}),
        keyalgorithm=dns.tsig.HMAC_SHA256,
    )  # fmt: skip
    update.delete(name, "CNAME")
    dns.query.tcp(update, "127.0.0.1", port=bind_port, timeout=5)
    assert lookup(name.rstrip("."), "CNAME") == []
    repaired = drift(session, domain)
    assert len(repaired.repaired) == 1 and repaired.state == "verified"
    assert lookup(name.rstrip("."), "CNAME") == [f"{domain.dkim_tokens[1]}.dkim.amazonses.com"]


def test_a_wrong_tsig_key_pauses_sync(env: None, session: Session, bind_port: int) -> None:
    tenant = TenantFactory()
    session.commit()
    settings = {
        "server": "127.0.0.1", "port": bind_port, "zone": ZONE,
        "tsig_name": KEY_NAME, "tsig_secret": "d3JvbmctYnV0LWxvbmctZW5vdWdoLXNlY3JldCEhIQ==",
    }  # fmt: skip
    domain = add_domain(session, tenant.id, ZONE, dns_provider="rfc2136", dns_settings=settings)
    report = publish(session, domain)
    assert report.paused and "TSIG" in report.paused, report.to_json()
