"""A secret given to comms never shows up in the database, the logs or any output."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner
from sqlalchemy import func, select

from comms.cli import main
from comms.db import unit_of_work
from comms.devsink import SinkHandler, SmtpSink
from comms.devstack import StackInfo, pg_bin
from comms.models import Delivery, DeliveryState
from tests.integration.conftest import Fleet, wait_until

pytestmark = pytest.mark.integration
SECRET = "smtp-pw-Zq81-never-in-plain-text"


def _auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.password == SECRET.encode()
    return AuthResult(success=ok, handled=False)


def test_secret_is_absent_from_dump_logs_and_output(
    fleet: Fleet, stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMMS_LOG_LEVEL", "DEBUG")
    runner = CliRunner()
    outputs: list[str] = []
    handler = SinkHandler()
    with SmtpSink(handler, authenticator=_auth) as sink:
        created = runner.invoke(main, ["tenant", "create", "acme"])
        outputs.append(created.output)
        tenant_id = created.stdout.split()[1]
        added = runner.invoke(
            main,
            ["provider", "add", "smtp", "--name", "authed", "--tenant", tenant_id,
             "--set", "host=127.0.0.1", "--set", f"port={sink.port}",
             "--set", "username=ann", "--set", f"password={SECRET}"],
        )  # fmt: skip
        assert added.exit_code == 0, added.output
        outputs.append(added.output)
        provider_id = json.loads(added.stdout)["id"]
        for argv in (["provider", "list"], ["provider", "test", provider_id]):
            result = runner.invoke(main, argv)
            outputs.append(result.output)
        assert "ok: connected" in outputs[-1], outputs[-1]

        fleet.worker("w1")
        sent = runner.invoke(
            main,
            ["send", "email", "--tenant", tenant_id, "--from", "a@example.com",
             "--to", "b@example.org", "--subject", "s", "--text", "t", "--wait"],
        )  # fmt: skip
        outputs.append(sent.output)

        def sent_count() -> int:
            with unit_of_work() as s:
                return int(
                    s.scalar(
                        select(func.count())
                        .select_from(Delivery)
                        .where(Delivery.state == DeliveryState.SENT)
                    )
                    or 0
                )

        wait_until(lambda: sent_count() == 1, 60, "the authenticated send", fleet.logs)
    assert handler.count() == 1

    pg_dump = pg_bin("pg_dump")
    dump = subprocess.run(
        [str(pg_dump), "-h", "127.0.0.1", "-p", str(stack.pg_port), "-U", "postgres", "comms"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "authed" in dump  # the row is in the dump ...
    assert SECRET not in dump  # ... its password is not
    logs = fleet.logs()
    assert "deliver.sent" in logs or "celery" in logs.lower()
    assert SECRET not in logs
    assert all(SECRET not in out for out in outputs)
