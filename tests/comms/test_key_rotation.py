"""`comms keys rotate`: every secret re-wrapped under the new primary key, resumably."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from comms.cli import main
from comms.crypto import reset_keyring
from comms.models import ProviderConfig
from comms.provider_configs import build_provider, create_provider_config
from comms.tenants import create_tenant


def test_rotate_rewraps_everything_and_old_key_can_go(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = os.environ["COMMS_MASTER_KEYS"]
    tenant, _ = create_tenant(session, "acme")
    for n in range(5):
        create_provider_config(
            session, kind="smtp", name=f"p{n}", tenant_id=tenant.id,
            settings={"host": "h", "password": f"secret-{n}"},
        )  # fmt: skip
    # a sending domain's DNS token is sealed the same way and rotates with them
    from comms.domains.service import provider_for, set_dns
    from comms.models import Domain, DomainState

    domain = Domain(
        id=uuid.uuid4(), tenant_id=tenant.id, name="acme.example", region="us-east-1",
        state=DomainState.PENDING, challenge="c", dkim_tokens=[], dns_settings={},
        published=[], findings={},
    )  # fmt: skip
    set_dns(session, domain, "cloudflare", {"api_token": "cf-token-secret"})
    session.add(domain)
    session.commit()

    new = "new1:" + base64.b64encode(os.urandom(32)).decode()
    monkeypatch.setenv("COMMS_MASTER_KEYS", f"{new},{old}")
    from comms.endpoints import reset_endpoints
    from comms.settings import reset_settings

    reset_settings(), reset_endpoints(), reset_keyring()
    result = CliRunner().invoke(main, ["keys", "rotate"])
    assert result.exit_code == 0, result.output
    assert "re-wrapped 6" in result.stdout
    again = CliRunner().invoke(main, ["keys", "rotate"])
    assert "re-wrapped 0, already current 6" in again.stdout

    monkeypatch.setenv("COMMS_MASTER_KEYS", new)  # the old key is gone
    reset_settings(), reset_endpoints(), reset_keyring()
    session.expire_all()
    configs = session.scalars(select(ProviderConfig).order_by(ProviderConfig.name)).all()
    assert {c.secrets["kid"] for c in configs if c.secrets} == {"new1"}
    assert [build_provider(c).settings["password"] for c in configs] == [
        f"secret-{n}" for n in range(5)
    ]
    rotated = session.get_one(Domain, domain.id)
    assert rotated.dns_secrets is not None and rotated.dns_secrets["kid"] == "new1"
    assert provider_for(rotated).settings["api_token"] == "cf-token-secret"
    monkeypatch.setenv("COMMS_MASTER_KEYS", old)
    reset_settings(), reset_endpoints(), reset_keyring()


def test_a_ciphertext_copied_to_another_tenant_does_not_decrypt(session: Session) -> None:
    from comms.crypto import DecryptionError

    a, _ = create_tenant(session, "a")
    b, _ = create_tenant(session, "b")
    mine = create_provider_config(
        session, kind="smtp", name="x", tenant_id=a.id, settings={"host": "h", "password": "p"}
    )
    theirs = create_provider_config(
        session, kind="smtp", name="x", tenant_id=b.id, settings={"host": "h", "password": "q"}
    )
    theirs.secrets = mine.secrets
    session.flush()
    with pytest.raises(DecryptionError):
        build_provider(theirs)
