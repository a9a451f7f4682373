"""Provider configurations: secrets encrypted at rest, resolution order."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from comms.models import Channel
from comms.provider_configs import (
    REDACTED,
    build_provider,
    create_provider_config,
    public_view,
    resolve_providers,
)
from comms.tenants import create_tenant


def test_secret_settings_are_stored_encrypted_and_shown_masked(session: Session) -> None:
    tenant, _ = create_tenant(session, "acme")
    config = create_provider_config(
        session,
        kind="smtp",
        name="mine",
        tenant_id=tenant.id,
        settings={"host": "smtp.example.com", "username": "u", "password": "s3cret-pw"},
    )
    session.commit()
    raw = session.execute(text("SELECT settings::text, secrets::text FROM provider_configs")).one()
    assert "s3cret-pw" not in raw[0] and "s3cret-pw" not in raw[1]
    assert public_view(config)["settings"]["password"] == REDACTED
    assert build_provider(config).settings["password"] == "s3cret-pw"


def test_tenant_provider_wins_over_system_default(session: Session) -> None:
    tenant, _ = create_tenant(session, "acme")
    other, _ = create_tenant(session, "other")
    system = create_provider_config(session, kind="console", name="default", settings={})
    own = create_provider_config(
        session, kind="smtp", name="own", tenant_id=tenant.id, settings={"host": "h"}
    )
    assert resolve_providers(session, tenant.id, Channel.EMAIL) == [own]
    assert resolve_providers(session, other.id, Channel.EMAIL) == [system]
    assert resolve_providers(session, other.id, Channel.SMS) == []
