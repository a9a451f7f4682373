"""Engine, sessions and the unit of work that publishes tasks only after commit."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from comms.endpoints import get_endpoints


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    engine = create_engine(
        get_endpoints().database_url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
    )
    return engine


@lru_cache(maxsize=1)
def session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def dispose_engine() -> None:
    """Drop pooled connections (after fork, or when tests switch databases)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    session_factory.cache_clear()


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's transaction has committed, never before.

    Tasks are published this way so that a worker never looks for a row that is
    not there yet, and a rolled-back transaction publishes nothing.
    """
    callbacks: list[Callable[[], None]] = session.info.setdefault("after_commit", [])
    callbacks.append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    callbacks: list[Callable[[], None]] = session.info.pop("after_commit", [])
    for callback in callbacks:
        callback()


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop("after_commit", None)


@contextlib.contextmanager
def unit_of_work() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    session = session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def migrate(revision: str = "head") -> None:
    """Bring the schema to ``revision`` through Alembic."""
    import logging

    from alembic import command
    from alembic.config import Config

    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # start-up chatter

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", get_endpoints().database_url.replace("%", "%%"))
    command.upgrade(config, revision)
