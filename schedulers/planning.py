"""When each recipient of a campaign batch should get the mail (send-time optimisation).

Uses the per-subscriber 168-bucket models stored in ``subscriber_engagement``;
a subscriber without a model is sent now.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

#: never later than this after the campaign fires
SEND_TIME_CAP = timedelta(hours=24)


def plan_send_times(
    models: Iterable[Sequence[Any]], now: datetime, cap: timedelta = SEND_TIME_CAP
) -> dict[uuid.UUID, datetime]:
    """``(subscriber_id, histogram, timezone)`` rows → chosen send time per subscriber."""
    from schedulers.sendtime import best_send_time

    planned: dict[uuid.UUID, datetime] = {}
    for subscriber_id, histogram, tz in models:
        hist = np.asarray(histogram, dtype=float)
        if hist.shape != (168,) or not np.isfinite(hist).all() or hist.sum() <= 0:
            continue
        planned[subscriber_id] = best_send_time(hist, tz or "UTC", now, cap)
    return planned
