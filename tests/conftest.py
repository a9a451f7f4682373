"""One embedded PostgreSQL and Redis per test run; clean tables for every test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session

from comms.devstack import DevStack, StackInfo

ROOT = Path(__file__).resolve().parent.parent
# per test run, so two runs on one checkout never share (or destroy) a stack
TEST_DATA_DIR = ROOT / ".comms" / f"test-{os.getpid()}"

# Fast retries and short leases so recovery paths run within a test's deadline.
TEST_ENV = {
    "COMMS_RETRY_BASE_SECONDS": "0.2",
    "COMMS_RETRY_MAX_SECONDS": "1",
    "COMMS_SEND_LEASE_SECONDS": "4",
    "COMMS_REPUBLISH_AFTER_SECONDS": "3",
    "COMMS_SWEEP_INTERVAL_SECONDS": "0.5",
    "COMMS_LOG_LEVEL": "WARNING",
}


def reset_process_caches() -> None:
    from comms.crypto import reset_keyring
    from comms.db import dispose_engine
    from comms.dispatch import reset_producer
    from comms.domains.ses_identity import reset_clients as reset_ses_clients
    from comms.endpoints import reset_endpoints
    from comms.inbound.replies import reset_domain_cache
    from comms.inbound.store import reset_store
    from comms.links import reset_signing_keys
    from comms.ratelimit import reset_client as reset_rate_limiter
    from comms.sending import reset_caches as reset_delivery_caches
    from comms.settings import reset_settings

    reset_settings()
    reset_endpoints()
    reset_keyring()
    reset_signing_keys()
    dispose_engine()
    reset_producer()
    reset_rate_limiter()
    reset_delivery_caches()
    reset_store()
    reset_domain_cache()
    reset_ses_clients()


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    dev = DevStack(TEST_DATA_DIR)
    dev.destroy()
    info = dev.up()
    env = {
        "COMMS_DATABASE_URL": info.database_url,
        "COMMS_REDIS_URL": info.redis_url,
        "COMMS_MASTER_KEYS": info.master_keys,
        "COMMS_DATA_DIR": str(TEST_DATA_DIR),
        **TEST_ENV,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_process_caches()
    from comms.db import migrate

    migrate()
    yield info
    reset_process_caches()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    dev.destroy()


@pytest.fixture
def clean_db(stack: StackInfo) -> Iterator[None]:
    """Empty every table and the broker before the test."""
    from comms.db import get_engine
    from comms.models import Base

    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with get_engine().begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} CASCADE"))
    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    client.close()
    yield


@pytest.fixture(autouse=True)
def _close_smtp_pool() -> Iterator[None]:
    """Pooled SMTP connections must not outlive the sink a test started."""
    yield
    from comms.providers.smtp import close_all_connections
    from comms.sending import reset_caches

    reset_caches()  # a provider config cached for one test must not serve the next
    close_all_connections()


@pytest.fixture
def session(clean_db: None) -> Iterator[Session]:
    from comms.db import session_factory
    from tests import factories

    s = session_factory()()
    factories.bind(s)
    try:
        yield s
    finally:
        s.rollback()
        s.close()


@pytest.fixture
def tenant(session: Session) -> uuid.UUID:
    from tests.factories import TenantFactory

    row = TenantFactory()
    session.commit()
    return row.id


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for localhost (STARTTLS and implicit TLS tests)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return d / "cert.pem", d / "key.pem"
