"""Saving, resolving and instantiating provider configurations.

Secret settings (those the provider's schema marks ``"secret": true``) are split
off and stored only envelope-encrypted; they are write-only everywhere else.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms.crypto import DecryptionError, get_keyring
from comms.models import Channel, Domain, ProviderConfig
from comms.providers import ConfigurationError, Provider, ProviderError, provider_class

REDACTED = "********"


def create_provider_config(
    session: Session,
    *,
    kind: str,
    name: str,
    settings: Mapping[str, Any],
    tenant_id: uuid.UUID | None = None,
    channel: Channel | None = None,
    priority: int = 0,
) -> ProviderConfig:
    """Validate and store a provider configuration; ``tenant_id`` None is a system default."""
    cls = provider_class(kind)
    cls(settings)  # raises ConfigurationError naming the missing or bad setting
    secret_names = cls.secret_fields()
    public = {k: v for k, v in settings.items() if k not in secret_names}
    secret = {k: v for k, v in settings.items() if k in secret_names}
    config = ProviderConfig(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=name,
        kind=kind,
        channel=channel or cls.channel,
        settings=public,
        priority=priority,
        active=True,
    )
    if secret:
        config.secrets = get_keyring().encrypt_json(
            secret, tenant_id=tenant_id, record_id=config.id
        )
    session.add(config)
    session.flush()
    return config


def resolve_providers(
    session: Session, tenant_id: uuid.UUID, channel: Channel
) -> list[ProviderConfig]:
    """The tenant's own active providers for the channel, else the system defaults, by priority."""
    for owner in (ProviderConfig.tenant_id == tenant_id, ProviderConfig.tenant_id.is_(None)):
        configs = list(
            session.scalars(
                select(ProviderConfig)
                .where(owner, ProviderConfig.channel == channel, ProviderConfig.active.is_(True))
                .order_by(ProviderConfig.priority, ProviderConfig.created_at)
            )
        )
        if configs:
            return configs
    return []


def build_provider(config: ProviderConfig) -> Provider:
    settings: dict[str, Any] = dict(config.settings)
    if config.secrets:
        settings.update(
            get_keyring().decrypt_json(
                config.secrets, tenant_id=config.tenant_id, record_id=config.id
            )
        )
    return provider_class(config.kind)(settings)


def public_view(config: ProviderConfig) -> dict[str, Any]:
    """What API and CLI may show: secrets replaced by a fixed mask."""
    secret_names = provider_class(config.kind).secret_fields()
    settings = dict(config.settings)
    for name in secret_names:
        settings[name] = REDACTED if config.secrets else None
    return {
        "id": str(config.id),
        "tenant_id": str(config.tenant_id) if config.tenant_id else None,
        "name": config.name,
        "kind": config.kind,
        "channel": config.channel.value,
        "priority": config.priority,
        "active": config.active,
        "settings": settings,
    }


def no_provider_error(tenant_id: uuid.UUID, channel: Channel) -> ConfigurationError:
    return ConfigurationError(
        f"no active {channel.value} provider for tenant {tenant_id} and no system default; "
        "add one with `comms provider add`"
    )


def update_provider_config(
    session: Session,
    config: ProviderConfig,
    *,
    name: str | None = None,
    priority: int | None = None,
    active: bool | None = None,
    settings: Mapping[str, Any] | None = None,
) -> ProviderConfig:
    """Change a configuration; given settings are merged (a secret given replaces the old one)."""
    if settings:
        cls = provider_class(config.kind)
        current = dict(config.settings)
        if config.secrets:
            current.update(
                get_keyring().decrypt_json(
                    config.secrets, tenant_id=config.tenant_id, record_id=config.id
                )
            )
        merged = {**current, **settings}
        cls(merged)  # validate before anything is written
        secret_names = cls.secret_fields()
        config.settings = {k: v for k, v in merged.items() if k not in secret_names}
        secret = {k: v for k, v in merged.items() if k in secret_names}
        config.secrets = (
            get_keyring().encrypt_json(secret, tenant_id=config.tenant_id, record_id=config.id)
            if secret
            else None
        )
    if name is not None:
        config.name = name
    if priority is not None:
        config.priority = priority
    if active is not None:
        config.active = active
    config.updated_at = func.now()
    session.flush()
    return config


def check_provider(config: ProviderConfig) -> tuple[bool, str]:
    """Run the provider's harmless check; (ok, what was found) in words a tenant can act on."""
    try:
        provider = build_provider(config)
        try:
            return True, provider.check()
        finally:
            provider.close()
    except ProviderError as exc:
        return False, f"{type(exc).__name__}: {exc.reason}"
    except DecryptionError as exc:
        return False, f"stored credentials cannot be decrypted: {exc}"


@dataclass(frozen=True)
class RotationReport:
    rewrapped: int
    already_current: int


#: every sealed column: (model, name of its secrets attribute)
_SEALED: tuple[tuple[type[ProviderConfig] | type[Domain], str], ...] = (
    (ProviderConfig, "secrets"),
    (Domain, "dns_secrets"),  # sending domains' DNS provider credentials
)


def rotate_keys(batch_size: int = 200) -> RotationReport:
    """Re-wrap every secret under the keyring's primary key, a batch per transaction.

    Online and resumable: rows are locked with SKIP LOCKED one batch at a time,
    and only rows still wrapped by an older key are touched, so a rerun picks
    up where an interrupted one stopped.
    """
    from comms.db import unit_of_work

    rewrapped = sum(_rewrap_all(model, name, batch_size) for model, name in _SEALED)
    with unit_of_work() as session:
        current = sum(
            int(
                session.scalar(
                    select(func.count()).select_from(model).where(getattr(model, name).is_not(None))
                )
                or 0
            )
            for model, name in _SEALED
        )
    return RotationReport(rewrapped=rewrapped, already_current=current - rewrapped)


def _rewrap_all(model: type[ProviderConfig] | type[Domain], name: str, batch_size: int) -> int:
    from comms.db import unit_of_work

    keyring = get_keyring()
    column = getattr(model, name)
    rewrapped = 0
    while True:
        with unit_of_work() as session:
            rows = session.scalars(
                select(model)
                .where(column.is_not(None), column["kid"].astext != keyring.primary_kid)
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            ).all()
            for row in cast("Sequence[ProviderConfig | Domain]", rows):
                sealed = getattr(row, name)
                setattr(
                    row, name, keyring.rewrap(sealed, tenant_id=row.tenant_id, record_id=row.id)
                )
            rewrapped += len(rows)
        if len(rows) < batch_size:
            return rewrapped
