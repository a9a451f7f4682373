"""The command line as a user types it (click's runner, real database and broker)."""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from comms.cli import main
from comms.models import ApiKey, Message, ProviderConfig, Tenant


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_tenant_create_prints_id_and_a_key_stored_only_hashed(
    runner: CliRunner, session: Session
) -> None:
    result = runner.invoke(main, ["tenant", "create", "acme"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    tenant_id = uuid.UUID(lines["tenant_id"])
    key = lines["api_key"]
    assert session.get(Tenant, tenant_id) is not None
    stored = session.scalars(select(ApiKey.key_hash)).one()
    assert key not in stored and len(stored) == 64


def test_tenant_create_rejects_an_empty_name(runner: CliRunner, session: Session) -> None:
    result = runner.invoke(main, ["tenant", "create", "  "])
    assert result.exit_code == 2
    assert "name" in result.stderr
    assert session.scalar(select(func.count()).select_from(Tenant)) == 0


def test_provider_add_masks_secrets_and_names_missing_settings(
    runner: CliRunner, session: Session
) -> None:
    ok = runner.invoke(
        main,
        ["provider", "add", "smtp", "--name", "relay", "--set", "host=smtp.example.com",
         "--set", "port=2525", "--set", "password=pw-123"],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    view = json.loads(ok.stdout)
    assert view["settings"] == {"host": "smtp.example.com", "port": 2525, "password": "********"}
    assert "pw-123" not in ok.output

    missing = runner.invoke(main, ["provider", "add", "smtp", "--name", "bad"])
    assert missing.exit_code == 2
    assert "'host' is required" in missing.stderr
    unknown = runner.invoke(main, ["provider", "add", "pigeon", "--name", "p"])
    assert unknown.exit_code == 2
    assert "unknown provider 'pigeon'" in unknown.stderr
    assert session.scalar(select(func.count()).select_from(ProviderConfig)) == 1


def test_providers_list(runner: CliRunner) -> None:
    result = runner.invoke(main, ["providers", "list", "--json"])
    assert result.exit_code == 0
    names = {p["name"] for p in json.loads(result.stdout)}
    assert {"console", "smtp"} <= names


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--to", "nobody"], "to.0"),
        (["--to", "ann@example.org", "--from", "x"], "from"),
        (["--to", "ann@example.org", "--text", ""], "(body)"),
    ],
)
def test_send_email_names_the_bad_field_and_publishes_nothing(
    runner: CliRunner, session: Session, tenant: uuid.UUID, args: list[str], field: str
) -> None:
    base = {"--from": "news@example.com", "--subject": "Hi", "--text": "Hello"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["send", "email", "--tenant", str(tenant)]
    for flag, value in base.items():
        argv += [flag, value]
    result = runner.invoke(main, argv)
    assert result.exit_code == 2
    assert field in result.stderr
    assert session.scalar(select(func.count()).select_from(Message)) == 0


def test_send_email_with_a_malformed_tenant_id(runner: CliRunner, stack: object) -> None:
    result = runner.invoke(
        main,
        ["send", "email", "--tenant", "acme", "--from", "a@example.com", "--to", "b@example.org",
         "--subject", "s", "--text", "t"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "--tenant: 'acme' is not a valid id" in result.stderr


def test_worker_refuses_unknown_queues(runner: CliRunner) -> None:
    result = runner.invoke(main, ["worker", "--queues", "send,bogus"])
    assert result.exit_code == 2
    assert "bogus" in result.stderr


def test_subscriber_import_is_all_or_nothing(
    runner: CliRunner, session: Session, tenant: uuid.UUID, tmp_path: object
) -> None:
    from pathlib import Path

    from comms.models import Subscriber

    good = Path(str(tmp_path)) / "good.csv"
    good.write_text("email,first_name,tags\nann@example.org,Ann,news;vip\nbob@example.org,Bob,\n")
    ok = runner.invoke(main, ["subscribers", "import", str(good), "--tenant", str(tenant)])
    assert ok.exit_code == 0, ok.output
    assert "imported 2" in ok.stdout
    ann = session.scalars(select(Subscriber).where(Subscriber.email == "ann@example.org")).one()
    assert ann.tags == ["news", "vip"] and ann.fields == {"first_name": "Ann"}

    bad = Path(str(tmp_path)) / "bad.csv"
    bad.write_text(
        "email,timezone\ncarl@example.org,UTC\nnot-an-email,UTC\ndee@example.org,Nowhere/X\n"
    )
    result = runner.invoke(main, ["subscribers", "import", str(bad), "--tenant", str(tenant)])
    assert result.exit_code == 2
    assert "line 3: email" in result.stderr and "line 4: timezone" in result.stderr
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Subscriber)) == 2


def test_campaign_cli_flow(runner: CliRunner, session: Session, tenant: uuid.UUID) -> None:
    created = runner.invoke(
        main,
        ["campaign", "create", "--tenant", str(tenant), "--name", "n", "--from", "a@example.com",
         "--subject", "s", "--text", "t"],
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    cid = created.stdout.split()[1]
    assert runner.invoke(main, ["campaign", "fire", cid, "--tenant", str(tenant)]).exit_code == 0
    again = runner.invoke(main, ["campaign", "fire", cid, "--tenant", str(tenant)])
    assert again.exit_code == 1 and "only a draft can be fired" in again.stderr
    status = runner.invoke(main, ["campaign", "status", cid, "--tenant", str(tenant)])
    assert json.loads(status.stdout)["status"] in ("firing", "sending")
    no_body = runner.invoke(
        main,
        ["campaign", "create", "--tenant", str(tenant), "--name", "n", "--from", "a@example.com",
         "--subject", "s"],
    )  # fmt: skip
    assert no_body.exit_code == 2 and "text" in no_body.stderr
