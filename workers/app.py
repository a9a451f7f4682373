"""The Celery application the fleet runs (``celery -A workers.app``)."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init, worker_process_shutdown
from kombu import Queue

from comms import contract
from comms.dispatch import celery_config
from comms.endpoints import get_endpoints
from schedulers.beat import schedule


def fleet_config() -> dict[str, Any]:
    config = celery_config(get_endpoints().redis_url)
    config.update(
        task_queues=[Queue(name) for name in contract.QUEUES],
        # a task is acknowledged after it ran, so a killed worker's task is redelivered;
        # every task is idempotent (compare-and-set in the database)
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # one message in hand per process: a long send never strands a queue behind it
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        beat_schedule={
            job.task: {"task": job.task, "schedule": job.every_seconds, "options": {"expires": 60}}
            for job in schedule()
        },
        imports=["workers.tasks"],
    )
    return config


def create_app() -> Celery:
    app = Celery("comms")
    # resolved when the configuration is first read, not at import: importing the
    # tasks (tests, tools) must not start or contact anything
    app.add_defaults(fleet_config)
    return app


app = create_app()


@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    from comms.logging import configure_logging
    from comms.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # pooled database connections must never cross a fork
    from comms.db import dispose_engine

    dispose_engine()


@worker_process_shutdown.connect
def _close_connections(**_: Any) -> None:
    from comms.providers.smtp import close_all_connections

    close_all_connections()
