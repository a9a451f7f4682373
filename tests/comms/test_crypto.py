"""Envelope encryption: round trips, binding to tenant and record, rotation."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comms.crypto import CryptoConfigError, DecryptionError, Keyring


def _spec(kid: str) -> tuple[str, str]:
    material = base64.b64encode(os.urandom(32)).decode()
    return f"{kid}:{material}", material


KEY_A, MATERIAL_A = _spec("a")
KEY_B, _ = _spec("b")
TENANT, RECORD = uuid.uuid4(), uuid.uuid4()


def test_round_trip_and_no_plain_text_in_the_envelope() -> None:
    ring = Keyring.parse(KEY_A)
    envelope = ring.encrypt_json({"password": "hunter2"}, tenant_id=TENANT, record_id=RECORD)
    assert "hunter2" not in str(envelope)
    assert envelope["kid"] == "a"
    assert ring.decrypt_json(envelope, tenant_id=TENANT, record_id=RECORD) == {
        "password": "hunter2"
    }


@pytest.mark.parametrize(
    ("tenant_id", "record_id"),
    [(uuid.uuid4(), RECORD), (TENANT, uuid.uuid4()), (None, RECORD)],
)
def test_a_ciphertext_cannot_move_to_another_tenant_or_record(
    tenant_id: uuid.UUID | None, record_id: uuid.UUID
) -> None:
    ring = Keyring.parse(KEY_A)
    envelope = ring.encrypt_json({"k": "v"}, tenant_id=TENANT, record_id=RECORD)
    with pytest.raises(DecryptionError):
        ring.decrypt_json(envelope, tenant_id=tenant_id, record_id=record_id)


def test_tampering_is_detected() -> None:
    ring = Keyring.parse(KEY_A)
    envelope = ring.encrypt_json({"k": "v"}, tenant_id=TENANT, record_id=RECORD)
    raw = bytearray(base64.b64decode(envelope["ciphertext"]))
    raw[0] ^= 1
    envelope["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(DecryptionError):
        ring.decrypt_json(envelope, tenant_id=TENANT, record_id=RECORD)


def test_unknown_key_id() -> None:
    envelope = Keyring.parse(KEY_A).encrypt_json({"k": "v"}, tenant_id=TENANT, record_id=RECORD)
    with pytest.raises(DecryptionError, match="'a' is not in the keyring"):
        Keyring.parse(KEY_B).decrypt_json(envelope, tenant_id=TENANT, record_id=RECORD)


def test_rotation_rewraps_the_data_key_only() -> None:
    old = Keyring.parse(KEY_A)
    envelope = old.encrypt_json({"k": "v"}, tenant_id=TENANT, record_id=RECORD)
    both = Keyring.parse(f"{KEY_B},{KEY_A}")
    assert both.needs_rewrap(envelope)
    rewrapped = both.rewrap(envelope, tenant_id=TENANT, record_id=RECORD)
    assert rewrapped["ciphertext"] == envelope["ciphertext"]
    assert not both.needs_rewrap(rewrapped)
    new_only = Keyring.parse(KEY_B)
    assert new_only.decrypt_json(rewrapped, tenant_id=TENANT, record_id=RECORD) == {"k": "v"}


@pytest.mark.parametrize(
    "spec",
    ["", "nokey", "a:not-base64!!", f"a:{base64.b64encode(b'short').decode()}", f"{KEY_A},{KEY_A}"],
)
def test_bad_keyrings_are_refused_without_echoing_key_material(spec: str) -> None:
    with pytest.raises(CryptoConfigError) as info:
        Keyring.parse(spec)
    assert MATERIAL_A not in str(info.value)


@given(st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=5))
def test_any_mapping_of_strings_round_trips(value: dict[str, str]) -> None:
    ring = Keyring.parse(KEY_A)
    envelope = ring.encrypt_json(value, tenant_id=None, record_id=RECORD)
    assert ring.decrypt_json(envelope, tenant_id=None, record_id=RECORD) == value
