"""Envelope encryption of secrets at rest: AES-256-GCM data keys wrapped by master keys.

Each record gets its own random data key; the data key is wrapped by the
keyring's primary master key (local, or AWS KMS), and the tenant id and record
id are bound in as associated data so a ciphertext cannot be moved elsewhere.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import os
import re
import uuid
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "CryptoConfigError",
    "DecryptionError",
    "Keyring",
    "KmsMasterKey",
    "LocalMasterKey",
    "MasterKey",
    "get_keyring",
    "reset_keyring",
]

_KID = re.compile(r"^[A-Za-z0-9_.-]+$")
ENVELOPE_VERSION = 1


class CryptoConfigError(Exception):
    """The keyring is missing or malformed (the message never contains key material)."""


class DecryptionError(Exception):
    """A ciphertext could not be opened: tampered, moved, or its key is gone."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


def associated_data(tenant_id: uuid.UUID | None, record_id: uuid.UUID) -> bytes:
    return f"{tenant_id or 'system'}:{record_id}".encode()


class MasterKey(abc.ABC):
    kid: str

    @abc.abstractmethod
    def wrap(self, data_key: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Return (nonce, wrapped key)."""

    @abc.abstractmethod
    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes: ...


class LocalMasterKey(MasterKey):
    def __init__(self, kid: str, key: bytes) -> None:
        self.kid = kid
        self._aead = AESGCM(key)
        self._material = key

    def derive(self, info: bytes) -> bytes:
        """A 32-byte key for another purpose (HKDF-SHA256), never the master key itself."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(
            self._material
        )

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        return nonce, self._aead.encrypt(nonce, data_key, aad)

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(nonce, wrapped, aad)


class KmsMasterKey(MasterKey):
    """A master key held in AWS KMS; the data key never leaves our process unwrapped."""

    def __init__(self, kid: str, key_id: str, client: Any | None = None) -> None:
        self.kid = kid
        self.key_id = key_id
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("kms")
        return self._client

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[bytes, bytes]:
        response = self.client.encrypt(
            KeyId=self.key_id, Plaintext=data_key, EncryptionContext={"aad": aad.hex()}
        )
        return b"", bytes(response["CiphertextBlob"])

    def unwrap(self, nonce: bytes, wrapped: bytes, aad: bytes) -> bytes:
        response = self.client.decrypt(
            KeyId=self.key_id, CiphertextBlob=wrapped, EncryptionContext={"aad": aad.hex()}
        )
        return bytes(response["Plaintext"])


class Keyring:
    """Master keys by id; the first one encrypts, every one decrypts."""

    def __init__(self, keys: list[MasterKey]) -> None:
        if not keys:
            raise CryptoConfigError("the keyring is empty")
        self._keys = {k.kid: k for k in keys}
        self.primary_kid = keys[0].kid

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        """Parse ``kid:BASE64KEY,kid2:BASE64KEY`` (or ``kms:kid=ARN``) entries."""
        keys: list[MasterKey] = []
        for position, entry in enumerate(e.strip() for e in spec.split(",") if e.strip()):
            if entry.startswith("kms:") and "=" in entry:
                kid, key_id = entry[4:].split("=", 1)
                if not _KID.match(kid) or not key_id:
                    raise CryptoConfigError(f"keyring entry {position + 1}: bad KMS entry")
                keys.append(KmsMasterKey(kid, key_id))
                continue
            kid, sep, material = entry.partition(":")
            if not sep or not _KID.match(kid):
                raise CryptoConfigError(
                    f"keyring entry {position + 1}: expected KID:BASE64KEY, KID of [A-Za-z0-9_.-]"
                )
            try:
                key = _unb64(material)
            except (binascii.Error, ValueError):
                raise CryptoConfigError(f"key {kid!r}: not valid base64") from None
            if len(key) != 32:
                raise CryptoConfigError(f"key {kid!r}: must be 32 bytes, got {len(key)}")
            keys.append(LocalMasterKey(kid, key))
        if len({k.kid for k in keys}) != len(keys):
            raise CryptoConfigError("keyring: a key id appears twice")
        return cls(keys)

    def local_keys(self) -> dict[str, LocalMasterKey]:
        return {kid: k for kid, k in self._keys.items() if isinstance(k, LocalMasterKey)}

    def _key(self, kid: str) -> MasterKey:
        try:
            return self._keys[kid]
        except KeyError:
            raise DecryptionError(f"master key {kid!r} is not in the keyring") from None

    def encrypt_json(
        self, value: dict[str, Any], *, tenant_id: uuid.UUID | None, record_id: uuid.UUID
    ) -> dict[str, Any]:
        aad = associated_data(tenant_id, record_id)
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, json.dumps(value).encode(), aad)
        key_nonce, wrapped = self._keys[self.primary_kid].wrap(data_key, aad)
        return {
            "v": ENVELOPE_VERSION,
            "kid": self.primary_kid,
            "wrapped_key": _b64(wrapped),
            "key_nonce": _b64(key_nonce),
            "nonce": _b64(nonce),
            "ciphertext": _b64(ciphertext),
        }

    def _data_key(self, envelope: dict[str, Any], aad: bytes, record_id: uuid.UUID) -> bytes:
        kid = str(envelope.get("kid"))
        try:
            return self._key(kid).unwrap(
                _unb64(envelope["key_nonce"]), _unb64(envelope["wrapped_key"]), aad
            )
        except (InvalidTag, KeyError, binascii.Error, ValueError) as exc:
            raise DecryptionError(
                f"cannot unwrap the data key of record {record_id} (key {kid!r})"
            ) from exc

    def decrypt_json(
        self, envelope: dict[str, Any], *, tenant_id: uuid.UUID | None, record_id: uuid.UUID
    ) -> dict[str, Any]:
        aad = associated_data(tenant_id, record_id)
        data_key = self._data_key(envelope, aad, record_id)
        try:
            plain = AESGCM(data_key).decrypt(
                _unb64(envelope["nonce"]), _unb64(envelope["ciphertext"]), aad
            )
        except (InvalidTag, KeyError, binascii.Error, ValueError) as exc:
            raise DecryptionError(f"record {record_id}: ciphertext does not authenticate") from exc
        value: dict[str, Any] = json.loads(plain)
        return value

    def needs_rewrap(self, envelope: dict[str, Any]) -> bool:
        return envelope.get("kid") != self.primary_kid

    def rewrap(
        self, envelope: dict[str, Any], *, tenant_id: uuid.UUID | None, record_id: uuid.UUID
    ) -> dict[str, Any]:
        """Wrap the same data key under the primary key; the ciphertext is unchanged."""
        aad = associated_data(tenant_id, record_id)
        data_key = self._data_key(envelope, aad, record_id)
        key_nonce, wrapped = self._keys[self.primary_kid].wrap(data_key, aad)
        return {
            **envelope,
            "kid": self.primary_kid,
            "wrapped_key": _b64(wrapped),
            "key_nonce": _b64(key_nonce),
        }


@lru_cache(maxsize=1)
def get_keyring() -> Keyring:
    from comms.endpoints import get_endpoints

    spec = get_endpoints().master_keys
    if not spec:
        raise CryptoConfigError(
            "COMMS_MASTER_KEYS is not set: secrets cannot be encrypted "
            "(see deploy/comms.env.example)"
        )
    return Keyring.parse(spec)


def reset_keyring() -> None:
    get_keyring.cache_clear()
