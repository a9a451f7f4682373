"""When each recipient of a campaign batch should get the mail (send-time optimisation).

Uses the per-subscriber 168-bucket models stored in ``subscriber_engagement``,
vectorised over the whole batch; a subscriber without a model is sent now.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from schedulers.sendtime import BUCKETS, MAX_CAP, choose_hours, offset_hours, send_at

#: never later than this after the campaign fires
SEND_TIME_CAP = MAX_CAP


def plan_send_times(
    models: Iterable[Sequence[Any]], now: datetime, cap: timedelta = SEND_TIME_CAP
) -> dict[uuid.UUID, datetime]:
    """``(subscriber_id, packed histogram, timezone)`` rows → chosen send time per subscriber."""
    ids: list[uuid.UUID] = []
    rows: list[Any] = []
    zones: list[str] = []
    for subscriber_id, histogram, tz in models:
        if not histogram or len(histogram) != BUCKETS * 4:
            continue  # a damaged model: send now rather than guess
        ids.append(subscriber_id)
        rows.append(histogram)
        zones.append(tz or "UTC")
    if not ids:
        return {}
    hist = np.frombuffer(b"".join(rows), dtype="<f4").astype(np.float64).reshape(len(ids), BUCKETS)
    usable = np.isfinite(hist).all(axis=1) & (hist.sum(axis=1) > 0)
    hist = np.where(np.isfinite(hist), hist, 0.0)
    offset_of = {zone: offset_hours(zone, now) for zone in set(zones)}
    offsets = np.asarray([offset_of[z] for z in zones], dtype=np.int64)
    hours = choose_hours(hist, offsets, now, min(cap, MAX_CAP))
    return {
        sid: send_at(now, int(h), min(cap, MAX_CAP), str(sid))
        for sid, h, ok in zip(ids, hours, usable, strict=True)
        if ok
    }
