"""Saving, resolving and instantiating provider configurations.

Secret settings (those the provider's schema marks ``"secret": true``) are split
off and stored only envelope-encrypted; they are write-only everywhere else.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from comms.crypto import get_keyring
from comms.models import Channel, ProviderConfig
from comms.providers import ConfigurationError, Provider, provider_class

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
