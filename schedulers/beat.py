"""The beat schedule as plain data: which task runs how often."""

from __future__ import annotations

from dataclasses import dataclass

from comms import contract
from comms.settings import get_settings


@dataclass(frozen=True)
class PeriodicJob:
    task: str
    every_seconds: float


def schedule() -> list[PeriodicJob]:
    settings = get_settings()
    return [
        PeriodicJob(contract.SWEEP, settings.sweep_interval_seconds),
        # sending domains: repair missing records, report weakened ones (weekly by default)
        PeriodicJob(contract.DOMAIN_DRIFT, settings.domain_drift_interval_seconds),
    ]
