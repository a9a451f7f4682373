"""Migrations and models agree, and every migration downgrades and upgrades again."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from comms.db import get_engine
from comms.devstack import StackInfo
from comms.models import Base


def test_models_match_the_migrated_schema(stack: StackInfo) -> None:
    with get_engine().connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


@pytest.fixture
def scratch_url(stack: StackInfo) -> Iterator[str]:
    admin = psycopg.connect(
        host="127.0.0.1", port=stack.pg_port, user="postgres", dbname="postgres", autocommit=True
    )
    admin.execute("DROP DATABASE IF EXISTS comms_migrations")
    admin.execute("CREATE DATABASE comms_migrations")
    yield f"postgresql+psycopg://postgres@127.0.0.1:{stack.pg_port}/comms_migrations"
    admin.execute("DROP DATABASE comms_migrations WITH (FORCE)")
    admin.close()


def test_downgrade_to_base_and_up_again(scratch_url: str) -> None:
    from pathlib import Path

    import comms.migrations

    config = Config()
    config.set_main_option("script_location", str(Path(comms.migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", scratch_url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    engine = create_engine(scratch_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()
