"""The dispatch port: publish work to the fleet by task name, never by import.

The API, CLI and producer client use this; they never import ``workers``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

from celery import Celery

from comms import contract
from comms.endpoints import broker_url
from comms.settings import get_settings


def celery_config(broker: str) -> dict[str, Any]:
    """Celery settings shared by producers and workers."""
    settings = get_settings()
    return {
        "broker_url": broker,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        "broker_transport_options": {"visibility_timeout": settings.broker_visibility_timeout},
        "broker_connection_retry_on_startup": True,
        "task_routes": {name: {"queue": queue} for name, queue in contract.ROUTES.items()},
        "task_default_queue": "send",
        "enable_utc": True,
    }


@lru_cache(maxsize=1)
def producer_app() -> Celery:
    app = Celery("comms-producer")
    app.conf.update(celery_config(broker_url()))
    return app


def reset_producer() -> None:
    if producer_app.cache_info().currsize:
        producer_app().close()
    producer_app.cache_clear()


def publish(task_name: str, args: Sequence[Any], countdown: float | None = None) -> None:
    producer_app().send_task(
        task_name,
        args=list(args),
        queue=contract.queue_for(task_name),
        countdown=countdown if countdown and countdown > 0 else None,
    )


def publish_many(task_name: str, arg_lists: Iterable[Sequence[Any]]) -> int:
    """Publish many tasks over one producer connection; returns how many."""
    app = producer_app()
    queue = contract.queue_for(task_name)
    count = 0
    with app.producer_or_acquire() as producer:
        for args in arg_lists:
            app.send_task(task_name, args=list(args), queue=queue, producer=producer)
            count += 1
    return count


def queue_depth(queue: str) -> int:
    """Messages waiting in a Redis broker queue (all priority lists)."""
    with producer_app().connection_for_write() as conn:
        client = conn.default_channel.client  # type: ignore[attr-defined]  # redis transport
        keys = [queue, *(f"{queue}\x06\x16{p}" for p in range(1, 10))]
        return int(sum(client.llen(key) for key in keys))
