"""A local stand-in for SNS signing: a test CA, a signing certificate, signed messages."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from comms.sns import _string_to_sign

CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Signer:
    ca_pem: bytes
    cert_pem: bytes
    key: rsa.RSAPrivateKey
    fetched: int = 0

    def sign(self, message: dict[str, Any], version: str = "2") -> dict[str, Any]:
        signed = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
        # SignatureVersion 1 is SHA1 by SNS definition
        algorithm = hashes.SHA256() if version == "2" else hashes.SHA1()  # noqa: S303
        raw = self.key.sign(_string_to_sign(signed, signed["Type"]), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(raw).decode()
        return signed

    def transport(self) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            if str(request.url) == CERT_URL:
                self.fetched += 1
                return httpx.Response(200, content=self.cert_pem)
            return httpx.Response(200, text="<ConfirmSubscriptionResponse/>")

        return httpx.MockTransport(handler)


def make_signer(*, expired: bool = False, ca_key: rsa.RSAPrivateKey | None = None) -> Signer:
    now = dt.datetime.now(dt.UTC)
    ca_key = ca_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Test SNS Root")).issuer_name(_name("Test SNS Root"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = now - dt.timedelta(days=10 if expired else 1)
    end = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=30)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("sns.amazonaws.com")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    pem = serialization.Encoding.PEM
    return Signer(ca.public_bytes(pem), leaf.public_bytes(pem), key)


def notification(
    message: str, *, minutes_old: float = 0, subject: str | None = None
) -> dict[str, Any]:
    stamp = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_old)
    out: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": f"msg-{stamp.timestamp()}",
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }
    if subject is not None:
        out["Subject"] = subject
    return out
