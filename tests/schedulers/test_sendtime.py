"""The send-time model: bounds, habits, and each of its known traps."""

from __future__ import annotations

import json
import time
import zoneinfo
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schedulers.sendtime import (
    HistoryEvent,
    SendTimeModel,
    best_send_time,
    predict_lines,
    spread_for_rate,
)

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # a Tuesday
NY = zoneinfo.ZoneInfo("America/New_York")


def _history(
    sub: str,
    local_hours: list[float],
    *,
    tz: str | None = "America/New_York",
    weeks: int = 8,
    kind: str = "open",
    sent_utc_hour: int = 14,
) -> list[HistoryEvent]:
    events = [HistoryEvent(sub, "profile", NOW, tz=tz)] if tz else []
    zone = zoneinfo.ZoneInfo(tz or "UTC")
    for day in range(1, weeks * 7 + 1, 3):
        sent = (NOW - timedelta(days=day)).replace(hour=sent_utc_hour)
        events.append(HistoryEvent(sub, "delivered", sent))
        for hour in local_hours:
            local = sent.astimezone(zone)
            at = local.replace(hour=int(hour), minute=int(hour % 1 * 60))
            if at < local:
                at += timedelta(days=1)
            events.append(HistoryEvent(sub, kind, at.astimezone(UTC)))  # type: ignore[arg-type]
    return events


def _predict(events: list[HistoryEvent], sub: str = "a") -> datetime:
    model = SendTimeModel()
    model.fit(events, NOW)
    return model.predict(NOW)[sub]


def test_an_evening_reader_in_new_york_gets_the_evening() -> None:
    at = _predict(_history("a", [20.0])).astimezone(NY)
    assert 19 <= at.hour <= 20, at


def test_no_data_means_now() -> None:
    assert _predict([HistoryEvent("a", "profile", NOW, tz="Europe/Paris")]) == NOW
    assert _predict([HistoryEvent("a", "delivered", NOW - timedelta(days=1))]) == NOW


def test_send_time_bias_is_normalised_by_exposure() -> None:
    # every delivery lands at 09:00 New York and a few opens follow right away (the inbox
    # is full then), but the clicks, strong evidence, come at 21:00
    events = _history("a", [9.2], sent_utc_hour=14, weeks=8)
    events += [e for e in _history("a", [21.0], sent_utc_hour=14, kind="click", weeks=8)
               if e.type == "click"]  # fmt: skip
    at = _predict(events).astimezone(NY)
    assert 20 <= at.hour <= 21, at


def test_machine_opens_are_discounted() -> None:
    events = _history("a", [18.0], kind="click")
    for ev in list(events):
        if ev.type == "delivered":  # Apple MPP fetches right after every delivery
            events.append(HistoryEvent("a", "open", ev.at + timedelta(seconds=40)))
            events.append(HistoryEvent("a", "open", ev.at + timedelta(hours=1), machine=True))
    at = _predict(events).astimezone(NY)
    assert 17 <= at.hour <= 18, at


def test_old_habits_fade() -> None:
    old = [HistoryEvent(e.subscriber, e.type, e.at - timedelta(days=365), e.machine, e.tz)
           for e in _history("a", [8.0], weeks=12)]  # fmt: skip
    recent = _history("a", [21.0], weeks=4)
    at = _predict(old + recent).astimezone(NY)
    assert 20 <= at.hour <= 21, at


def test_sparse_subscribers_lean_on_their_time_zone() -> None:
    crowd: list[HistoryEvent] = []
    for i in range(30):
        crowd += _history(f"c{i}", [12.0], tz="Asia/Tokyo", weeks=4)
    lonely = [HistoryEvent("a", "profile", NOW, tz="Asia/Tokyo"),
              HistoryEvent("a", "delivered", NOW - timedelta(days=2)),
              HistoryEvent("a", "open", NOW - timedelta(days=2) + timedelta(hours=1))]  # fmt: skip
    model = SendTimeModel()
    model.fit(crowd + lonely, NOW)
    at = model.predict(NOW)["a"].astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert 11 <= at.hour <= 12, at


def test_time_zone_is_inferred_without_a_profile() -> None:
    model = SendTimeModel()
    model.fit(_history("a", [9.0, 20.0], tz="Asia/Tokyo", weeks=8)[1:], NOW)
    assert model.zones[0] in ("Etc/GMT-9", "Etc/GMT-8", "Etc/GMT-10")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["delivered", "open", "click"]),
                  st.floats(min_value=0, max_value=90 * 24), st.booleans()),
        max_size=40,
    ),
    st.floats(min_value=0, max_value=24),
)  # fmt: skip
def test_always_within_now_and_the_cap(events: list[tuple[str, float, bool]], cap: float) -> None:
    history = [
        HistoryEvent("a", kind, NOW - timedelta(hours=hours), machine)  # type: ignore[arg-type]
        for kind, hours, machine in events
    ]
    model = SendTimeModel()
    model.fit(history, NOW)
    for when in model.predict(NOW, timedelta(hours=cap)).values():
        assert NOW <= when <= NOW + timedelta(hours=cap)


def _line(**fields: object) -> str:
    return json.dumps(fields)


def test_lines_in_lines_out_and_bad_lines() -> None:
    lines = [
        _line(subscriber=1, type="profile", at="2026-11-01T00:00:00Z", tz="Europe/Paris"),
        _line(subscriber="b", type="open", at="2026-11-20T19:00:00Z"),
    ]
    out = [json.loads(x) for x in predict_lines(lines, NOW)]
    assert [o["subscriber"] for o in out] == ["1", "b"]
    assert out[0]["send_at"] == "2026-11-24T09:00:00Z"
    when = "2026-11-20T19:00:00Z"
    bad_lines = [
        (_line(type="open", at=when), "subscriber"),
        (_line(subscriber="x", type="read", at=when), "type"),
        (_line(subscriber="x", type="open", at="yesterday"), "at"),
        (_line(subscriber="x", type="profile", at=when, tz="Mars/Base"), "tz"),
        ("not json", "JSON"),
    ]
    for bad, field in bad_lines:
        with pytest.raises(ValueError, match=rf"line 2: .*{field}"):
            list(predict_lines([lines[0], bad], NOW))


def test_best_send_time_for_a_stored_model() -> None:
    hist = np.zeros(168)
    hist[[d * 24 + 20 for d in range(7)]] = 1.0  # 20:00 local, every day
    at = best_send_time(hist, "America/New_York", NOW).astimezone(NY)
    assert 19 <= at.hour <= 20
    assert best_send_time(np.zeros(168), "UTC", NOW) == NOW


def test_spread_for_rate_never_exceeds_the_rate() -> None:
    times = [NOW] * 25 + [NOW + timedelta(seconds=1)] * 5
    spread = spread_for_rate(times, 10)
    per_second: dict[int, int] = {}
    for t in spread:
        per_second[int(t.timestamp())] = per_second.get(int(t.timestamp()), 0) + 1
        assert t >= NOW
    assert max(per_second.values()) <= 10
    assert spread[:10] == [NOW] * 10  # only moved when needed


def test_twenty_thousand_subscribers_is_quick() -> None:
    rng = np.random.default_rng(1)
    events = [
        HistoryEvent(f"s{i}", "open" if k % 3 else "delivered",
                     NOW - timedelta(hours=float(rng.uniform(1, 2000))))
        for i in range(20_000) for k in range(50)
    ]  # fmt: skip
    started = time.perf_counter()
    model = SendTimeModel()
    model.fit(events, NOW)
    assert len(model.predict(NOW)) == 20_000
    assert time.perf_counter() - started < 15  # smoke check; the bench reports real figures
