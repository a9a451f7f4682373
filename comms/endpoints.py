"""Where this process finds PostgreSQL, Redis and its master keys.

Explicit ``COMMS_*`` settings win; with none set, the embedded development stack
is started (idempotently) and its URLs are used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from comms.settings import get_settings


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    redis_url: str
    master_keys: str | None


@lru_cache(maxsize=1)
def get_endpoints() -> Endpoints:
    settings = get_settings()
    database_url = settings.database_url
    redis_url = settings.redis_url
    master_keys = settings.master_keys.get_secret_value() if settings.master_keys else None
    if database_url is None or redis_url is None:
        from comms.devstack import DevStack

        info = DevStack(settings.data_dir).up()
        database_url = database_url or info.database_url
        redis_url = redis_url or info.redis_url
        master_keys = master_keys or info.master_keys
    return Endpoints(database_url=database_url, redis_url=redis_url, master_keys=master_keys)


def broker_url() -> str:
    """The broker URL alone: producers need nothing else, and never start a database."""
    settings = get_settings()
    if settings.redis_url:
        return settings.redis_url
    return get_endpoints().redis_url


def reset_endpoints() -> None:
    get_endpoints.cache_clear()
