"""Authentication of inbound mail: DKIM (dkimpy), DMARC alignment, a trusted MTA's results."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from comms.inbound.auth import aligned, authenticate
from comms.settings import reset_settings

MESSAGE = (
    b"From: Ann <ann@mail.example.org>\r\nTo: reply+x@news.acme.example\r\n"
    b"Subject: Re: News\r\nMessage-ID: <a1@mail.example.org>\r\n\r\nCount me in!\r\n"
)


@pytest.fixture(scope="module")
def keypair() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


def _signed(private: bytes, domain: bytes = b"example.org") -> bytes:
    signature = dkim.sign(MESSAGE, b"sel", domain, private, include_headers=[b"from", b"subject"])
    return signature + MESSAGE


def _dns(records: dict[str, str]) -> object:
    return lambda name: [records[name]] if name in records else []


def test_a_valid_dkim_signature_aligned_with_from_passes_dmarc(
    keypair: tuple[bytes, str],
) -> None:
    private, record = keypair
    lookup = _dns(
        {"sel._domainkey.example.org": record, "_dmarc.example.org": "v=DMARC1; p=reject"}
    )
    result = authenticate(_signed(private), lookup=lookup)  # type: ignore[arg-type]
    assert (result.dkim, result.dmarc, result.source) == ("pass", "pass", "verified")


def test_a_tampered_body_fails_dkim_and_dmarc(keypair: tuple[bytes, str]) -> None:
    private, record = keypair
    lookup = _dns({"sel._domainkey.example.org": record, "_dmarc.example.org": "v=DMARC1; p=none"})
    tampered = _signed(private).replace(b"Count me in!", b"Send me money")
    result = authenticate(tampered, lookup=lookup)  # type: ignore[arg-type]
    assert (result.dkim, result.dmarc) == ("fail", "fail")


def test_a_signature_from_an_unrelated_domain_does_not_align(keypair: tuple[bytes, str]) -> None:
    private, record = keypair
    lookup = _dns({"sel._domainkey.bulk.example": record, "_dmarc.example.org": "v=DMARC1; p=none"})
    result = authenticate(_signed(private, b"bulk.example"), lookup=lookup)  # type: ignore[arg-type]
    assert (result.dkim, result.dmarc) == ("pass", "fail")
    assert aligned("mail.example.org", "example.org") and not aligned("bulk.example", "example.org")


def test_unsigned_mail_from_a_domain_without_dmarc_is_none_not_fail() -> None:
    result = authenticate(MESSAGE, lookup=_dns({}))  # type: ignore[arg-type]
    assert (result.dkim, result.dmarc) == ("none", "none")


@pytest.fixture
def trusted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("COMMS_INBOUND_TRUSTED_AUTHSERV_ID", "mx.comms.example")
    reset_settings()
    yield
    reset_settings()


def test_only_the_trusted_mtas_authentication_results_are_believed(trusted: None) -> None:
    forged = b"Authentication-Results: mx.comms.example; dkim=pass; spf=pass; dmarc=pass\r\n"
    genuine = (
        b"Authentication-Results: mx.comms.example;\r\n dkim=fail header.d=example.org;"
        b" spf=softfail smtp.mailfrom=example.org; dmarc=fail\r\n"
        b"X-Spam-Status: Yes, score=7.4 required=5.0\r\n"
    )
    other = b"Authentication-Results: evil.example; dkim=pass; dmarc=pass\r\n"
    # the MTA adds its header on top; anything below was written by the sender
    result = authenticate(genuine + other + forged + MESSAGE)
    assert (result.dkim, result.spf, result.dmarc) == ("fail", "softfail", "fail")
    assert result.spam_score == 7.4 and result.source == "trusted-mta"
    assert authenticate(other + MESSAGE).dkim == "none"
