"""Verifying Amazon SNS HTTP(S) messages before believing them.

SES event publishing reaches us as SES configuration set → SNS topic → HTTPS
subscription. A message is accepted only if: its type is known; its
``SigningCertURL`` is https on an SNS host; that certificate is currently valid
and chains to a trusted CA; the signature (SignatureVersion 1: SHA1, 2: SHA256,
RSA PKCS#1 v1.5) matches the canonical string; its TopicArn is allowed; and its
Timestamp is recent.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

DEFAULT_PATTERN = r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$"
DEFAULT_SUBSCRIBE_HOST_PATTERN = DEFAULT_PATTERN
_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}


class SnsVerificationError(ValueError):
    """The message is not a genuine, current SNS message for an allowed topic."""


@dataclass(frozen=True)
class SnsMessage:
    type: str
    message_id: str
    topic_arn: str
    message: str
    subject: str | None
    timestamp: datetime
    subscribe_url: str | None
    token: str | None


def _string_to_sign(message: Mapping[str, Any], kind: str) -> bytes:
    out = []
    for key in _FIELDS[kind]:
        if key == "Subject" and message.get("Subject") is None:
            continue
        out.append(f"{key}\n{message[key]}\n")
    return "".join(out).encode()


def _default_trust() -> bytes:
    try:
        import certifi

        with open(certifi.where(), "rb") as fh:
            return fh.read()
    except ImportError:  # pragma: no cover - certifi ships with httpx
        with open("/etc/ssl/certs/ca-certificates.crt", "rb") as fh:
            return fh.read()


class SnsVerifier:
    def __init__(
        self,
        allowed_topics: Sequence[str],
        *,
        cert_host_pattern: str = DEFAULT_PATTERN,
        trusted_ca_pem: bytes | None = None,
        max_age: timedelta = timedelta(hours=1),
        http: httpx.Client | None = None,
    ) -> None:
        self.allowed_topics = frozenset(allowed_topics)
        self.cert_host = re.compile(cert_host_pattern)
        self.max_age = max_age
        self.http = http or httpx.Client(timeout=5.0, follow_redirects=False)
        self.trusted = x509.load_pem_x509_certificates(trusted_ca_pem or _default_trust())
        self._certs: OrderedDict[str, list[x509.Certificate]] = OrderedDict()

    def verify(self, message: Mapping[str, Any], now: datetime | None = None) -> SnsMessage:
        now = now or datetime.now(UTC)
        kind = message.get("Type")
        if kind not in _FIELDS:
            raise SnsVerificationError("unknown message type")
        for key in (*_FIELDS[kind], "Signature", "SignatureVersion", "SigningCertURL"):
            if key != "Subject" and not isinstance(message.get(key), str):
                raise SnsVerificationError(f"missing field {key}")
        if message["TopicArn"] not in self.allowed_topics:
            raise SnsVerificationError("topic not allowed")
        try:
            timestamp = datetime.fromisoformat(str(message["Timestamp"]).replace("Z", "+00:00"))
        except ValueError:
            raise SnsVerificationError("bad Timestamp") from None
        if timestamp < now - self.max_age:
            raise SnsVerificationError("timestamp too old")
        if timestamp > now + timedelta(minutes=5):
            raise SnsVerificationError("timestamp in the future")
        algorithm = _HASHES.get(str(message["SignatureVersion"]))
        if algorithm is None:
            raise SnsVerificationError("unsupported SignatureVersion")
        cert = self._certificate(str(message["SigningCertURL"]), now)
        try:
            signature = base64.b64decode(str(message["Signature"]), validate=True)
        except binascii.Error:
            raise SnsVerificationError("Signature is not base64") from None
        public_key = cert.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SnsVerificationError("certificate key is not RSA")
        try:
            public_key.verify(
                signature, _string_to_sign(message, kind), padding.PKCS1v15(), algorithm()
            )
        except InvalidSignature:
            raise SnsVerificationError("signature mismatch") from None
        return SnsMessage(
            type=kind, message_id=str(message["MessageId"]), topic_arn=str(message["TopicArn"]),
            message=str(message["Message"]), subject=message.get("Subject"), timestamp=timestamp,
            subscribe_url=message.get("SubscribeURL"), token=message.get("Token"),
        )  # fmt: skip

    def _certificate(self, url: str, now: datetime) -> x509.Certificate:
        parts = urlsplit(url)
        if parts.scheme != "https" or not self.cert_host.match(parts.hostname or ""):
            raise SnsVerificationError("SigningCertURL host not allowed")
        if not parts.path.endswith(".pem"):
            raise SnsVerificationError("SigningCertURL is not a .pem")
        chain = self._certs.get(url)
        if chain is None:
            try:
                response = self.http.get(url)
                response.raise_for_status()
                chain = x509.load_pem_x509_certificates(response.content)
            except (httpx.HTTPError, ValueError) as exc:
                raise SnsVerificationError(f"signing certificate unavailable: {exc}") from None
            self._certs[url] = chain
            while len(self._certs) > 32:
                self._certs.popitem(last=False)
        self._check_chain(chain, now)
        return chain[0]

    def _check_chain(self, chain: list[x509.Certificate], now: datetime) -> None:
        """Walk leaf → issuer (from the PEM's own intermediates, then the trust store)."""
        current, intermediates = chain[0], chain[1:]
        for _ in range(5):
            if not current.not_valid_before_utc <= now <= current.not_valid_after_utc:
                raise SnsVerificationError("certificate expired or not yet valid")
            for root in self.trusted:
                if root.subject == current.issuer and _signed_by(current, root):
                    return
            parent = next(
                (
                    c
                    for c in intermediates
                    if c.subject == current.issuer and _signed_by(current, c)
                ),
                None,
            )
            if parent is None:
                break
            current = parent
        raise SnsVerificationError("certificate not trusted")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def is_sns_subscribe_url(url: str, pattern: str = DEFAULT_SUBSCRIBE_HOST_PATTERN) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(re.match(pattern, parts.hostname or ""))


def confirm_subscription(msg: SnsMessage, http: httpx.Client) -> None:
    """Visit the SubscribeURL, only when it is on an SNS host."""
    if not msg.subscribe_url or not is_sns_subscribe_url(msg.subscribe_url):
        raise SnsVerificationError("SubscribeURL is not an SNS host")
    http.get(msg.subscribe_url).raise_for_status()
