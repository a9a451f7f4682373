"""Signed tokens for links in mail (one-click unsubscribe), verified without a database.

A token is ``base64url(kid | tenant id | subscriber id | list id) "." base64url(mac)``
with a 128-bit truncated HMAC-SHA256. Keys come from ``COMMS_SIGNING_KEYS`` or,
when unset, are derived (HKDF) from each local master key, so a token signed
before a key rotation verifies until the old key leaves the keyring.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from functools import lru_cache

from comms.crypto import CryptoConfigError, Keyring, get_keyring
from comms.settings import get_settings

MAC_BYTES = 16


class BadToken(ValueError):
    """Malformed, tampered or signed by an unknown key; callers answer 404 with no detail."""


@dataclass(frozen=True)
class UnsubscribeToken:
    tenant_id: uuid.UUID
    subscriber_id: uuid.UUID
    list_id: uuid.UUID  # the campaign (or list) the link was sent for


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=1)
def signing_keys() -> tuple[str, dict[str, bytes]]:
    """(primary kid, kid → key)."""
    spec = get_settings().signing_keys
    ring = Keyring.parse(spec.get_secret_value()) if spec is not None else get_keyring()
    keys = {kid: key.derive(b"comms link signing v1") for kid, key in ring.local_keys().items()}
    if ring.primary_kid not in keys:
        raise CryptoConfigError("set COMMS_SIGNING_KEYS: the primary master key is not local")
    return ring.primary_kid, keys


def reset_signing_keys() -> None:
    signing_keys.cache_clear()


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES]


def sign_unsubscribe(token: UnsubscribeToken) -> str:
    kid, keys = signing_keys()
    payload = (
        kid.encode()
        + b"|"
        + token.tenant_id.bytes
        + token.subscriber_id.bytes
        + token.list_id.bytes
    )
    return f"{_b64(payload)}.{_b64(_mac(keys[kid], payload))}"


def verify_unsubscribe(text: str) -> UnsubscribeToken:
    try:
        body, mac = text.split(".", 1)
        payload, given = _unb64(body), _unb64(mac)
        kid_raw, ids = payload.split(b"|", 1)
    except (ValueError, binascii.Error):
        raise BadToken("malformed") from None
    _, keys = signing_keys()
    key = keys.get(kid_raw.decode(errors="replace"))
    if key is None or len(ids) != 48 or not hmac.compare_digest(_mac(key, payload), given):
        raise BadToken("not ours")
    return UnsubscribeToken(
        tenant_id=uuid.UUID(bytes=ids[:16]),
        subscriber_id=uuid.UUID(bytes=ids[16:32]),
        list_id=uuid.UUID(bytes=ids[32:]),
    )


def unsubscribe_url(token: str) -> str:
    return f"{get_settings().public_base_url.rstrip('/')}/u/{token}"


# -- reply addresses (ARCHITECTURE.md decision 8) --------------------------------
#: bytes of HMAC kept in a reply token: 80 bits, checked at RCPT before any data
REPLY_MAC_BYTES = 10


def _reply_mac(key: bytes, delivery_id: uuid.UUID) -> bytes:
    return hmac.new(key, b"reply|" + delivery_id.bytes, hashlib.sha256).digest()[:REPLY_MAC_BYTES]


def sign_reply(delivery_id: uuid.UUID) -> str:
    """The token of ``reply+TOKEN@``: the delivery id and a truncated HMAC, lower-case base32.

    Lower case and no padding because mail systems may fold the case of a local
    part; 42 characters, so ``reply+TOKEN`` fits the 64-character local-part limit.
    """
    kid, keys = signing_keys()
    raw = delivery_id.bytes + _reply_mac(keys[kid], delivery_id)
    return base64.b32encode(raw).decode().rstrip("=").lower()


def verify_reply(token: str) -> uuid.UUID:
    """The delivery id a reply token names; BadToken if it is malformed or forged."""
    text = token.strip().upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise BadToken("malformed reply token") from None
    if len(raw) != 16 + REPLY_MAC_BYTES:
        raise BadToken("malformed reply token")
    delivery_id = uuid.UUID(bytes=raw[:16])
    _, keys = signing_keys()
    # any key of the ring verifies, so replies to mail sent before a rotation still arrive
    if not any(hmac.compare_digest(_reply_mac(k, delivery_id), raw[16:]) for k in keys.values()):
        raise BadToken("reply token does not verify")
    return delivery_id


def reply_address(delivery_id: uuid.UUID, domain: str) -> str:
    return f"reply+{sign_reply(delivery_id)}@{domain}"


# -- open and click tracking -----------------------------------------------------
def sign_tracking(delivery_id: uuid.UUID, url: str | None = None) -> str:
    """A token for the open pixel (``url`` None) or a click redirect to ``url``.

    The URL travels inside the signed token, so the redirect can only ever lead
    to an address that was in the message we sent.
    """
    kid, keys = signing_keys()
    payload = kid.encode() + b"|" + delivery_id.bytes + (url or "").encode()
    return f"{_b64(payload)}.{_b64(_mac(keys[kid], b'track|' + payload))}"


def verify_tracking(text: str) -> tuple[uuid.UUID, str | None]:
    """(delivery id, URL or None) from a tracking token; BadToken when it is not ours."""
    try:
        body, mac = text.split(".", 1)
        payload, given = _unb64(body), _unb64(mac)
        kid_raw, rest = payload.split(b"|", 1)
        delivery_id = uuid.UUID(bytes=rest[:16])
        url = rest[16:].decode() or None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadToken("malformed tracking token") from None
    _, keys = signing_keys()
    key = keys.get(kid_raw.decode(errors="replace"))
    if key is None or not hmac.compare_digest(_mac(key, b"track|" + payload), given):
        raise BadToken("tracking token does not verify")
    return delivery_id, url


def tenant_secret(purpose: bytes, tenant_id: uuid.UUID) -> str:
    """A per-tenant signing secret for ``purpose``, derived from the link key, never stored."""
    kid, keys = signing_keys()
    return hmac.new(keys[kid], purpose + b"|" + tenant_id.bytes, hashlib.sha256).hexdigest()
