"""Per-site baselines: Welford math, site-local hour of week, stability, anomaly scoring, review feedback,
threshold retuning, serialisation and schema validity."""

from __future__ import annotations

import json
import statistics
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas import serde
from schemas.topics import person_key
from streams.core.baselines import (
    DAY_MS,
    BaselineConfig,
    SiteBaselines,
    hour_of_week,
    sample_stddev,
    severity,
    verdict_from_resolution,
    welford,
)
from streams.core.types import Out
from streams.core.windows import window_id

MIN = 60_000
HOUR = 60 * MIN
# Monday 2026-11-02 09:00 in Nairobi (UTC+3) = 06:00Z
MON_9_NAIROBI = int(datetime(2026, 11, 2, 6, tzinfo=UTC).timestamp() * 1000)
WEEK = 7 * DAY_MS
TZ = "Africa/Nairobi"


def win(start: int, **metrics: float) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "window_id": window_id("SITE", 1, "s1", start, 5 * MIN), "scope": "SITE", "tenant_id": 1, "site_id": "s1",
        "person_id": None, "window_start": start, "window_end": start + 5 * MIN, "phone_events_count": 3,
        "location_updates_count": 10, "movement_distance_meters": 200.0, "tasks_completed_count": 0,
        "tour_checkpoints_scanned": 4, "tours": [], "event_count": 17, "late_event_count": 0}
    rec.update(metrics)
    return rec


def by_topic(outs: list[Out], topic: str) -> list[dict[str, Any]]:
    return [o.record for o in outs if o.topic == topic]


RAW = BaselineConfig(span_ms=5 * MIN)  # judge raw 5-minute windows (the trailing span has its own test)
_WEEK_NO: dict[int, int] = {}


def train(book: SiteBaselines, values: list[float], metric: str = "location_updates_count") -> list[Out]:
    """One window per week at the same hour of week, so every value lands in the same slot."""
    outs: list[Out] = []
    for v in values:
        i = _WEEK_NO[id(book)] = _WEEK_NO.get(id(book), -1) + 1
        outs += book.observe_window(win(MON_9_NAIROBI + i * WEEK, **{metric: v}), TZ)
    return outs


def test_welford_matches_the_textbook() -> None:
    xs = [3.0, 7.5, 1.25, 9.0, 4.0, 4.0, 12.5]
    n, mean, m2 = 0, 0.0, 0.0
    for x in xs:
        n, mean, m2 = welford(n, mean, m2, x)
    assert n == len(xs) and mean == pytest.approx(statistics.mean(xs))
    assert sample_stddev(n, m2) == pytest.approx(statistics.stdev(xs))
    assert sample_stddev(1, 0.0) == 0.0


def test_hour_of_week_is_site_local_monday_zero() -> None:
    assert hour_of_week(MON_9_NAIROBI, TZ) == 9
    assert hour_of_week(MON_9_NAIROBI, "UTC") == 6
    sunday_2130z = int(datetime(2026, 11, 1, 21, 30, tzinfo=UTC).timestamp() * 1000)
    assert hour_of_week(sunday_2130z, TZ) == 0  # already Monday 00:30 in Nairobi
    assert hour_of_week(sunday_2130z, "UTC") == 6 * 24 + 21
    assert hour_of_week(sunday_2130z, "Not/AZone") == 6 * 24 + 21  # unknown zone: UTC, never a crash
    # DST: London is UTC+0 in November, UTC+1 in July
    july = int(datetime(2026, 7, 6, 8, tzinfo=UTC).timestamp() * 1000)  # a Monday
    assert hour_of_week(july, "Europe/London") == 9


def test_baselines_learn_per_metric_and_become_stable_after_min_samples() -> None:
    book = SiteBaselines.new(1, "s1", RAW)
    outs = train(book, [10.0] * 7)
    recs = by_topic(outs, "baselines")
    assert len(recs) == 7 * 5  # every metric's slot, every window
    last = {r["metric"]: r for r in recs[-5:]}
    loc = last["location_updates_count"]
    assert loc["baseline_id"] == "1:s1:location_updates_count:9" and loc["hour_of_week"] == 9
    assert loc["sample_count"] == 7 and loc["mean"] == 10.0 and not loc["is_stable"]
    assert [o.key for o in outs[-5:]] == [r["baseline_id"].encode() for r in recs[-5:]]
    more = train(book, [10.0])
    assert by_topic(more, "baselines")[1]["is_stable"]
    for o in outs + more:
        serde.encode(o.stem, o.record)


def test_no_anomaly_before_stable_then_deviations_past_threshold_are_flagged() -> None:
    book = SiteBaselines.new(1, "s1", RAW)
    assert by_topic(train(book, [10.0, 0.0]), "anomalies") == []  # unstable: nothing flagged
    book = SiteBaselines.new(1, "s1", RAW)
    train(book, [10, 12, 9, 11, 10, 13, 8, 11, 10, 12])
    mean = statistics.mean([10, 12, 9, 11, 10, 13, 8, 11, 10, 12])
    sd = statistics.stdev([10, 12, 9, 11, 10, 13, 8, 11, 10, 12])
    assert by_topic(train(book, [11.0]), "anomalies") == []  # inside the band
    start = MON_9_NAIROBI + 30 * WEEK
    outs = book.observe_window(win(start, location_updates_count=0), TZ)  # 0 vs ~10.8: past any floor
    (a,) = by_topic(outs, "anomalies")
    assert outs[0].topic == "anomalies"  # anomalies first, then baselines
    assert a["metric"] == "location_updates_count" and a["observed"] == 0.0
    assert a["expected"] == pytest.approx((mean * 10 + 11) / 11)
    assert a["score"] < -3.0 and a["threshold"] == 3.0 and a["severity"] == "LOW"  # just past: LOW
    assert a["window_id"] == window_id("SITE", 1, "s1", start, 5 * MIN)
    assert a["baseline_id"] == "1:s1:location_updates_count:9" and a["person_id"] is None
    assert outs[0].key == person_key(1, None, "s1")
    assert sd > 0
    for o in outs:
        serde.encode(o.stem, o.record)


def test_stddev_floor_keeps_near_constant_counts_from_screaming() -> None:
    book = SiteBaselines.new(1, "s1", RAW)
    train(book, [0.0] * 20, metric="tasks_completed_count")
    assert by_topic(train(book, [1.0], metric="tasks_completed_count"), "anomalies") == []
    assert by_topic(train(book, [5.0], metric="tasks_completed_count"), "anomalies") != []


def test_severity_scale() -> None:
    assert [severity(z, 3.0) for z in (3.1, -4.5, 6.0, -9.0)] == ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
    assert severity(1.0, 0.0) == "CRITICAL"


def _book_with_anomalies(n: int, cfg: BaselineConfig | None = None) -> tuple[SiteBaselines, list[dict[str, Any]]]:
    book = SiteBaselines.new(1, "s1", cfg or RAW)
    train(book, [10, 12, 9, 11, 10, 13, 8, 11, 10, 12] * 20)  # long history: a few outliers barely move it
    found: list[dict[str, Any]] = []
    for i in range(n):
        v = 26.0 if i % 2 == 0 else -5.0
        found += by_topic(book.observe_window(win(MON_9_NAIROBI + (200 + i) * WEEK, location_updates_count=v), TZ),
                          "anomalies")
    assert len(found) == n
    return book, found


def test_feedback_counts_each_anomaly_once_and_ignores_unknown_ids() -> None:
    book, found = _book_with_anomalies(3)
    assert len(found) == 3
    at = found[0]["window_end"] + MIN
    (b,) = book.feedback(found[0]["anomaly_id"], "FALSE_POSITIVE", at)
    assert b.record["feedback_total"] == 1 and b.record["false_positives"] == 1
    assert b.record["false_positive_rate"] == 1.0 and b.record["updated_at"] >= at
    assert book.feedback(found[0]["anomaly_id"], "FALSE_POSITIVE", at) == []  # redelivered review
    (b,) = book.feedback(found[1]["anomaly_id"], "CONFIRMED", at)
    assert b.record["feedback_total"] == 2 and b.record["false_positive_rate"] == 0.5
    assert book.feedback("no-such-anomaly", "CONFIRMED", at) == []
    with pytest.raises(ValueError):
        book.feedback(found[2]["anomaly_id"], "MAYBE", at)  # type: ignore[arg-type]
    serde.encode(b.stem, b.record)


def test_verdict_from_ticket_resolution() -> None:
    assert verdict_from_resolution("FALSE_POSITIVE") == "FALSE_POSITIVE"
    assert verdict_from_resolution("FRAUD_CONFIRMED") == "CONFIRMED"
    assert verdict_from_resolution("DUPLICATE") is None and verdict_from_resolution(None) is None


def test_retune_raises_threshold_when_false_positives_exceed_target_and_is_bounded() -> None:
    book, found = _book_with_anomalies(6)
    at = found[-1]["window_end"] + MIN
    for a in found:
        book.feedback(a["anomaly_id"], "FALSE_POSITIVE", at)
    (b,) = book.retune(at)
    assert b.record["dynamic_threshold"] == pytest.approx(3.0 * 1.15)
    assert b.record["last_threshold_update"] == at
    assert book.retune(at + 1) == []  # no new reviews since: nothing to retune
    # keep reporting false positives: the threshold climbs to the ceiling and stays there
    cfg = BaselineConfig(min_feedback=1, span_ms=5 * MIN)
    book, found = _book_with_anomalies(1, cfg)
    key = "location_updates_count|9"
    for k in range(40):
        t = book._tune(key)  # [threshold, reviews, false positives, ...]
        t[1] += 1
        t[2] += 1
        book.retune(at + k)
    assert book.baseline_record(key)["dynamic_threshold"] == cfg.max_threshold


def test_retune_lowers_threshold_gently_when_reviews_confirm() -> None:
    book, found = _book_with_anomalies(6)
    at = found[-1]["window_end"] + MIN
    for a in found:
        book.feedback(a["anomaly_id"], "CONFIRMED", at)
    (b,) = book.retune(at)
    assert b.record["dynamic_threshold"] == pytest.approx(3.0 * 0.95)
    assert b.record["false_positive_rate"] == 0.0
    cfg = BaselineConfig(min_feedback=1, span_ms=5 * MIN)
    book, _ = _book_with_anomalies(1, cfg)
    key = "location_updates_count|9"
    for k in range(60):
        book._tune(key)[1] += 1
        book.retune(at + k)
    assert book.baseline_record(key)["dynamic_threshold"] == cfg.min_threshold


def test_retune_holds_threshold_near_target_rate() -> None:
    book, found = _book_with_anomalies(6)
    at = found[-1]["window_end"] + MIN
    for i, a in enumerate(found):  # 1 in 6 false: between target/2 and target
        book.feedback(a["anomaly_id"], "FALSE_POSITIVE" if i == 0 else "CONFIRMED", at)
    assert book.retune(at) == []
    assert book.baseline_record("location_updates_count|9")["dynamic_threshold"] == 3.0


def test_scheduled_retune_runs_weekly_on_window_event_time() -> None:
    cfg = BaselineConfig(retune_interval_ms=300 * WEEK, span_ms=5 * MIN)
    book, found = _book_with_anomalies(6, cfg)
    assert book.last_retune == MON_9_NAIROBI + 5 * MIN  # the first window set the schedule
    for a in found:
        book.feedback(a["anomaly_id"], "FALSE_POSITIVE", found[-1]["window_end"])
    assert book.observe_window(win(MON_9_NAIROBI + 299 * WEEK), TZ)[0].topic == "baselines"
    assert book.baseline_record("location_updates_count|9")["dynamic_threshold"] == 3.0  # not due yet
    start = MON_9_NAIROBI + 300 * WEEK + 60 * MIN  # another hour: only the retune touches the 09h slot
    outs = book.observe_window(win(start), TZ)
    tuned = [r for r in by_topic(outs, "baselines") if r["hour_of_week"] == 9]
    assert len(tuned) == 1 and tuned[0]["dynamic_threshold"] > 3.0
    assert tuned[0]["last_threshold_update"] == start + 5 * MIN
    assert outs[0].record is not None and outs[0].topic == "baselines"


def test_pending_reviews_are_bounded() -> None:
    book, found = _book_with_anomalies(6, BaselineConfig(max_pending=2, span_ms=5 * MIN))
    assert len(book.pending) == 2 and list(book.pending) == [a["anomaly_id"] for a in found[-2:]]
    assert book.feedback(found[0]["anomaly_id"], "CONFIRMED", 0) == []


def test_state_round_trips_through_json() -> None:
    book, found = _book_with_anomalies(4)
    book.feedback(found[0]["anomaly_id"], "FALSE_POSITIVE", found[0]["window_end"])
    d = json.loads(json.dumps(book.to_dict()))
    copy = SiteBaselines.from_dict(d)
    assert copy.to_dict() == book.to_dict()
    nxt = win(MON_9_NAIROBI + 250 * WEEK, location_updates_count=11.0)
    a = [(o.topic, o.key, o.record) for o in book.observe_window(nxt, TZ)]
    b = [(o.topic, o.key, o.record) for o in copy.observe_window(nxt, TZ)]
    assert a == b
    assert len(json.dumps(d)) < 20_000  # packed: one busy slot plus an empty week compresses well
    with pytest.raises(ValueError):  # a state written under another metric list is refused, not misread
        SiteBaselines.from_dict(d, BaselineConfig(metrics=("phone_events_count",)))


def test_trailing_span_sums_recent_windows_and_cooldown_keeps_one_bad_hour_one_anomaly() -> None:
    book = SiteBaselines.new(1, "s1", BaselineConfig(min_age_ms=6 * DAY_MS))
    t = MON_9_NAIROBI
    outs = book.observe_window(win(t, phone_events_count=2), TZ)
    assert outs == []  # the first hour is a partial span: not learned from
    for k in range(1, 12):
        book.observe_window(win(t + k * 5 * MIN, phone_events_count=2), TZ)
    (b,) = [r for r in by_topic(book.observe_window(win(t + 12 * 5 * MIN), TZ), "baselines")
            if r["metric"] == "phone_events_count"]
    assert b["mean"] == 2 * 11 + 3  # 11 windows of 2 and this one of 3 in the trailing hour
    assert not b["is_stable"]  # plenty of samples, but all from one week
    # eight weeks of two normal hours (09h, 10h); then a normal 09h and a silent 10h
    book = SiteBaselines.new(1, "s1")
    for week in range(8):
        for k in range(24):
            book.observe_window(win(t + week * WEEK + k * 5 * MIN, phone_events_count=2 + (k + week) % 3), TZ)
    assert book.baseline_record("phone_events_count|10")["is_stable"]
    for k in range(12):
        book.observe_window(win(t + 8 * WEEK + k * 5 * MIN), TZ)
    found: list[dict[str, Any]] = []
    for k in range(12):
        silent = win(t + 8 * WEEK + HOUR + k * 5 * MIN, phone_events_count=0, location_updates_count=0,
                     movement_distance_meters=0.0, tour_checkpoints_scanned=0, event_count=0)
        found += by_topic(book.observe_window(silent, TZ), "anomalies")
    # the trailing hour empties window by window; each metric is flagged once, then kept quiet
    assert sorted(a["metric"] for a in found) == ["location_updates_count", "movement_distance_meters",
                                                  "phone_events_count", "tour_checkpoints_scanned"]
    assert all(a["score"] < 0 and a["expected"] > a["observed"] for a in found)
    d = json.loads(json.dumps(book.to_dict()))
    assert SiteBaselines.from_dict(d).to_dict() == book.to_dict()
