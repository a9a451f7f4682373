"""Secrets never reach the logs."""

from __future__ import annotations

import json

import pytest
import structlog

from comms.logging import configure_logging


def test_secret_fields_and_api_keys_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    structlog.get_logger("t").info(
        "provider.saved",
        password="hunter2",
        settings={"host": "h", "api_key": "abc"},
        note="key ck_0123456789ab_SECRETSECRET used",
        delivery_id="d1",
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["password"] == "[redacted]"
    assert line["settings"] == {"host": "h", "api_key": "[redacted]"}
    assert "SECRETSECRET" not in line["note"]
    assert line["delivery_id"] == "d1"
