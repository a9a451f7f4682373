"""Send-time optimisation: when is each subscriber most likely to open, within the cap?

Each subscriber gets a 168-bucket hour-of-week model in their LOCAL time zone
(bucket = weekday * 24 + hour, Monday 00:00 = 0): an open *propensity* per
bucket. The traps it handles:

- Send-time bias: a tenant that always sends on Tuesday at 10:00 sees opens pile
  up after 10:00 because that is when mail was waiting. Opens are divided by
  *exposure*: each delivery spreads exposure over the following 48 hours
  (decaying as the mail sinks in the inbox), so a bucket is credited only in
  proportion to how often mail was actually there to be read.
- Machine opens (Apple Mail Privacy Protection, scanners): opens flagged
  ``machine`` or within two minutes of a delivery count 5 %; clicks count 2.5x
  a human open, being stronger evidence.
- Decay: evidence halves every 60 days, so old habits fade.
- Sparse subscribers: propensity = (opens + a * prior) / (exposure + a); the prior is
  the pooled propensity of subscribers in the same time zone (or everyone,
  or a generic daytime curve when there is too little data).
- Time zone: from a ``profile`` event, else inferred as the UTC offset whose
  shifted open histogram best matches a generic daytime curve, else UTC.
  Offsets are taken at ``now`` (a DST change inside the history shifts old
  evidence by an hour; accepted).
- No data at all: send now.
- Waves: the chosen hour gets a deterministic per-subscriber jitter of up to
  ``JITTER_MINUTES``, and ``spread_for_rate`` moves sends later so that no
  second holds more than the provider's rate.

The choice maximises the expected chance of an open in the 24 hours after
arrival (weighted by exp(-k/6), ``WINDOW``), over start times in
[now, now + cap], cap at most 24 hours; ties go to the earliest.
"""

from __future__ import annotations

import hashlib
import json
import zoneinfo
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
from numpy.typing import NDArray

BUCKETS = 168
MAX_CAP = timedelta(hours=24)
HALF_LIFE_DAYS = 60.0
MACHINE_WEIGHT = 0.05
CLICK_WEIGHT = 2.5
MACHINE_WINDOW_SECONDS = 120
EXPOSURE_HOURS = 48
EXPOSURE_DECAY_HOURS = 6.0
PRIOR_STRENGTH = 3.0
MIN_TZ_POPULATION = 20
WINDOW = np.exp(-np.arange(24) / 6.0)  # open chances in the hours after arrival
#: exposure units that pull an hour-of-week towards the subscriber's own hour-of-day habit
DAY_POOL_STRENGTH = 12.0
JITTER_MINUTES = 10

EventType = Literal["delivered", "open", "click", "profile"]
_TYPES: dict[str, int] = {"delivered": 0, "open": 1, "click": 2, "profile": 3}

Array = NDArray[np.float64]


def _daytime_curve() -> Array:
    """A generic reader: awake 7-23, peaks in the morning and the evening, quieter weekends."""
    hours = np.arange(24)
    day = 0.05 + np.exp(-((hours - 9) ** 2) / 6) + 0.8 * np.exp(-((hours - 20) ** 2) / 8)
    day[hours < 6] = 0.02
    week = np.concatenate([day * (0.8 if d >= 5 else 1.0) for d in range(7)])
    return np.asarray(week / week.sum(), dtype=np.float64)


DAYTIME = _daytime_curve()


@dataclass(frozen=True)
class HistoryEvent:
    subscriber: str
    type: EventType
    at: datetime
    machine: bool = False
    tz: str | None = None


def pack_histogram(hist: Array | Sequence[float]) -> bytes:
    return np.asarray(hist, dtype="<f4").tobytes()


def unpack_histogram(raw: bytes) -> Array:
    return np.frombuffer(raw, dtype="<f4").astype(np.float64)


def parse_history_line(line: str) -> HistoryEvent:
    """One JSON line of history; ValueError names the bad field."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ValueError("each line must be a JSON object")
    subscriber = data.get("subscriber")
    if not isinstance(subscriber, str | int) or isinstance(subscriber, bool) or subscriber == "":
        raise ValueError("field 'subscriber': a non-empty string or integer is required")
    kind = data.get("type")
    if kind not in _TYPES:
        raise ValueError(f"field 'type': must be one of {', '.join(_TYPES)}")
    try:
        at = datetime.fromisoformat(str(data.get("at")).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("field 'at': an ISO 8601 timestamp is required") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    machine = data.get("machine", False)
    if not isinstance(machine, bool):
        raise ValueError("field 'machine': must be true or false")
    tz = data.get("tz")
    if tz is not None:
        try:
            zoneinfo.ZoneInfo(str(tz))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"field 'tz': {tz!r} is not an IANA time zone") from None
    return HistoryEvent(str(subscriber), kind, at.astimezone(UTC), machine, tz)


def offset_hours(tz: str, now: datetime) -> int:
    try:
        offset = now.astimezone(zoneinfo.ZoneInfo(tz)).utcoffset()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return 0
    return round((offset or timedelta()).total_seconds() / 3600)


def _utc_bucket(epoch: NDArray[np.float64]) -> NDArray[np.int64]:
    # 1970-01-01 was a Thursday (weekday 3)
    hours = np.floor(epoch / 3600).astype(np.int64)
    return np.asarray((hours + 3 * 24) % BUCKETS, dtype=np.int64)


class SendTimeModel:
    """Fit on a history of events, predict a send time per subscriber."""

    def __init__(self) -> None:
        self.subscribers: list[str] = []
        self.rates: Array = np.zeros((0, BUCKETS))
        self.evidence: Array = np.zeros(0)
        self.offsets: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.zones: list[str] = []

    def fit(self, events: Iterable[HistoryEvent], now: datetime) -> None:
        index: dict[str, int] = {}
        subs: list[int] = []
        kinds: list[int] = []
        times: list[float] = []
        machine: list[bool] = []
        zone_of: dict[int, str] = {}
        for ev in events:
            i = index.setdefault(ev.subscriber, len(index))
            if ev.type == "profile":
                if ev.tz:
                    zone_of[i] = ev.tz
                continue
            subs.append(i)
            kinds.append(_TYPES[ev.type])
            times.append(ev.at.timestamp())
            machine.append(ev.machine)
        n = len(index)
        self.subscribers = list(index)
        sub = np.asarray(subs, dtype=np.int64)
        kind = np.asarray(kinds, dtype=np.int64)
        epoch = np.asarray(times, dtype=np.float64)
        flagged = np.asarray(machine, dtype=bool)
        age_days = np.maximum(0.0, (now.timestamp() - epoch) / 86400)
        decay = 0.5 ** (age_days / HALF_LIFE_DAYS)

        # machine opens: flagged, or within two minutes after a delivery to the same subscriber
        order = np.lexsort((epoch, sub))
        s_sorted, t_sorted, k_sorted = sub[order], epoch[order], kind[order]
        # the latest delivery at or before each event, per subscriber, without a Python loop:
        # offset each subscriber's clock so a running maximum never crosses subscribers
        shift = s_sorted.astype(np.float64) * 1e10
        marks = np.where(k_sorted == 0, t_sorted + shift, -np.inf)
        last_delivery = np.maximum.accumulate(marks) - shift if len(marks) else marks
        quick = np.zeros(len(order), dtype=bool)
        quick[order] = (t_sorted - last_delivery) <= MACHINE_WINDOW_SECONDS
        is_open, is_click, is_delivery = kind == 1, kind == 2, kind == 0
        weight = np.where(is_click, CLICK_WEIGHT, 0.0)
        weight = np.where(is_open, np.where(flagged | quick, MACHINE_WEIGHT, 1.0), weight)
        weight = weight * decay

        # time zones: profile, else inferred from human engagement in UTC
        utc_bucket = _utc_bucket(epoch)
        human = (is_open & ~flagged & ~quick) | is_click
        utc_hist = np.zeros((n, BUCKETS))
        np.add.at(utc_hist, (sub[human], utc_bucket[human]), weight[human])
        offsets = np.zeros(n, dtype=np.int64)
        zones = ["UTC"] * n
        for i, tz in zone_of.items():
            offsets[i] = offset_hours(tz, now)
            zones[i] = tz
        need = np.asarray(
            [i not in zone_of and utc_hist[i].sum() > 0 for i in range(n)], dtype=bool
        )
        if need.any():
            candidates = np.arange(-11, 15)
            scores = np.stack(
                [np.roll(utc_hist[need], o, axis=1) @ DAYTIME for o in candidates], axis=1
            )
            best = candidates[np.argmax(scores, axis=1)]
            offsets[need] = best
            for row, o in zip(np.flatnonzero(need), best, strict=True):
                zones[row] = f"Etc/GMT{-o:+d}" if o else "UTC"

        local = (utc_bucket + offsets[sub]) % BUCKETS
        engagement = np.zeros((n, BUCKETS))
        np.add.at(engagement, (sub, local), weight)
        exposure = np.zeros(n * BUCKETS)
        lag = np.arange(EXPOSURE_HOURS)
        spread = np.exp(-lag / EXPOSURE_DECAY_HOURS)
        d_sub, d_bucket, d_decay = sub[is_delivery], local[is_delivery], decay[is_delivery]
        flat = (d_sub[:, None] * BUCKETS + (d_bucket[:, None] + lag[None, :]) % BUCKETS).ravel()
        exposure += np.bincount(
            flat, weights=(d_decay[:, None] * spread[None, :]).ravel(), minlength=n * BUCKETS
        )
        exposure_m = exposure.reshape(n, BUCKETS)

        prior = self._priors(engagement, exposure_m, zones)
        # hierarchy: population prior → the subscriber's hour-of-day habit (weekdays and
        # weekends apart) → their hour-of-week; sparse weeks borrow from their own days
        daily = _daily(engagement, exposure_m, prior)
        self.rates = (engagement + DAY_POOL_STRENGTH * daily) / (exposure_m + DAY_POOL_STRENGTH)
        self.evidence = engagement.sum(axis=1)
        self.offsets = offsets
        self.zones = zones

    @staticmethod
    def _priors(engagement: Array, exposure: Array, zones: list[str]) -> Array:
        """Pooled propensity of each subscriber's time zone, or of everyone, or daytime."""
        n = len(zones)
        total_exposure = exposure.sum()
        if total_exposure > 0 and engagement.sum() > 0:
            overall = (engagement.sum(axis=0) + 1e-9) / (exposure.sum(axis=0) + 1.0)
        else:
            overall = DAYTIME * 0.05
        prior = np.tile(overall, (n, 1))
        by_zone: dict[str, list[int]] = {}
        for i, zone in enumerate(zones):
            by_zone.setdefault(zone, []).append(i)
        for members in by_zone.values():
            if len(members) >= MIN_TZ_POPULATION:
                rows = np.asarray(members)
                pooled = (engagement[rows].sum(axis=0) + 1e-9) / (exposure[rows].sum(axis=0) + 1.0)
                prior[rows] = pooled
        return np.asarray(prior, dtype=np.float64)

    def histogram(self, subscriber: str) -> Array:
        return np.asarray(self.rates[self.subscribers.index(subscriber)], dtype=np.float64)

    def predict(self, now: datetime, cap: timedelta = MAX_CAP) -> dict[str, datetime]:
        cap = min(cap, MAX_CAP)
        out: dict[str, datetime] = {}
        if not self.subscribers:
            return out
        hours_ahead = choose_hours(self.rates, self.offsets, now, cap)
        for i, subscriber in enumerate(self.subscribers):
            if self.evidence[i] <= 0:
                out[subscriber] = now
            else:
                out[subscriber] = send_at(now, int(hours_ahead[i]), cap, subscriber)
        return out


_WEEKEND = np.arange(BUCKETS) >= 5 * 24


def _daily(engagement: Array, exposure: Array, prior: Array) -> Array:
    """Hour-of-day propensity (weekday and weekend apart), tiled back over the week."""
    out = np.empty_like(engagement)
    for mask in (~_WEEKEND, _WEEKEND):
        days = int(mask.sum() // 24)
        eng = engagement[:, mask].reshape(len(engagement), days, 24).sum(axis=1)
        exp_ = exposure[:, mask].reshape(len(exposure), days, 24).sum(axis=1)
        pri = prior[:, mask].reshape(len(prior), days, 24).mean(axis=1)
        rate = (eng + PRIOR_STRENGTH * pri) / (exp_ + PRIOR_STRENGTH)
        out[:, mask] = np.tile(rate, (1, days))
    return out


def _scores_at(rates: Array, buckets: NDArray[np.int64]) -> Array:
    """Expected open chance for arrival at each given local bucket (window after arrival).

    ``rates`` is (n, 168), ``buckets`` (n, m): only the m candidate buckets are
    scored, each as the window-weighted sum of the rates that follow it.
    """
    width = len(WINDOW)
    extended = np.concatenate([rates, rates[:, : width - 1]], axis=1)  # wrap the week
    windows = np.lib.stride_tricks.sliding_window_view(extended, width, axis=1)  # (n, 168, w)
    rows = np.arange(len(rates))[:, None]
    return np.asarray(windows[rows, buckets] @ WINDOW)


def choose_hours(
    rates: Array, offsets: NDArray[np.int64], now: datetime, cap: timedelta
) -> NDArray[np.int64]:
    """For each subscriber, how many whole hours ahead (0 = now) the best arrival is."""
    horizon = int(cap.total_seconds() // 3600)
    start = (_utc_bucket(np.asarray([now.timestamp()]))[0] + offsets) % BUCKETS
    steps = np.arange(horizon + 1)
    buckets = (start[:, None] + steps[None, :]) % BUCKETS
    scores = _scores_at(rates, buckets)
    return np.asarray(np.argmax(scores, axis=1), dtype=np.int64)  # first max: the earliest


def send_at(now: datetime, hours_ahead: int, cap: timedelta, key: str) -> datetime:
    if hours_ahead == 0:
        return now
    top = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=hours_ahead)
    jitter = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % (JITTER_MINUTES * 60)
    return min(max(now, top + timedelta(seconds=jitter)), now + cap)


def best_send_time(hist: Array, tz: str, now: datetime, cap: timedelta = MAX_CAP) -> datetime:
    """The chosen time for one stored model (168 local-time propensities)."""
    cap = min(cap, MAX_CAP)
    hist = np.asarray(hist, dtype=np.float64)
    if hist.shape != (BUCKETS,) or not np.isfinite(hist).all() or hist.sum() <= 0:
        return now
    offsets = np.asarray([offset_hours(tz, now)], dtype=np.int64)
    hours = int(choose_hours(hist[None, :], offsets, now, cap)[0])
    return send_at(now, hours, cap, f"{tz}:{hist.tobytes().hex()[:16]}")


def spread_for_rate(times: Sequence[datetime], rate_per_second: float) -> list[datetime]:
    """Move sends later (only as needed) so no one-second slot holds more than the rate."""
    per_slot = max(1, int(rate_per_second))
    used: dict[int, int] = {}
    out: list[datetime] = []
    for when in times:
        slot = int(when.timestamp())
        while used.get(slot, 0) >= per_slot:
            slot += 1
        used[slot] = used.get(slot, 0) + 1
        out.append(when if slot == int(when.timestamp()) else datetime.fromtimestamp(slot, UTC))
    return out


def predict_lines(lines: Iterable[str], now: datetime, cap: timedelta = MAX_CAP) -> Iterator[str]:
    """JSON lines of history in, one ``{"subscriber", "send_at"}`` line per subscriber out."""
    events = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(parse_history_line(line))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    model = SendTimeModel()
    model.fit(events, now)
    for subscriber, when in model.predict(now, cap).items():
        stamp = when.astimezone(UTC).isoformat().replace("+00:00", "Z")
        yield json.dumps({"subscriber": subscriber, "send_at": stamp})
