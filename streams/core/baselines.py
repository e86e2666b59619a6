"""Per-site baselines of the window signals, by site-local hour of the week, with self-tuning thresholds.

One :class:`SiteBaselines` per site (state key ``tenant:site``) holds a slot per metric x hour-of-week:
an online (Welford) mean and variance, review feedback counts and the slot's dynamic z threshold. Each
closed SITE window yields, per metric, the sum over the trailing ``span_ms`` (an hour by default) ending at
the window's end: 5-minute counts of bursty signals (a tour round falls in one window or the next) are too
noisy to judge, the trailing hour is not, and it is still sampled every window so a slot is stable within
its first hour. That sample is scored against its slot (once stable) and then folded into it; after an
anomaly the same metric stays quiet for ``cooldown_ms`` so one bad hour is one anomaly, not twelve. Reviews of the
anomalies it raised (false positive or confirmed) are counted per slot; a retune, on a schedule driven by
window event time (weekly by default) or on demand, raises the threshold of a slot whose false-positive
rate since the last retune is above target and lowers it gently when well under, within bounds.

Sans-I/O and deterministic: time is the windows' ``window_end``; no clock.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.topics import person_key
from streams.core.types import Out, Record

DAY_MS = 24 * 3600 * 1000
METRICS: tuple[str, ...] = ("phone_events_count", "location_updates_count", "movement_distance_meters",
                            "tasks_completed_count", "tour_checkpoints_scanned")

Verdict = Literal["FALSE_POSITIVE", "CONFIRMED"]
VERDICTS: frozenset[str] = frozenset({"FALSE_POSITIVE", "CONFIRMED"})

# Slot layout (a list, to keep 840 slots per site small):
N, MEAN, M2, THRESHOLD, FB, FP, FB_MARK, FP_MARK, LAST_TUNE, UPDATED, FIRST = range(11)


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    min_samples: int = 8  # samples before a slot may flag anomalies
    # ... and the age its samples must span: the samples of one hour are correlated (trailing sums a window
    # apart), so a slot truly knows how much an hour varies only once it has seen it in two weeks.
    min_age_ms: int = 0  # e.g. 6 days: stable only once seen in two weeks (0: samples alone decide)
    default_threshold: float = 3.0  # z
    min_threshold: float = 2.0
    max_threshold: float = 6.0
    target_fp_rate: float = 0.2  # retune holds the reviewed false-positive share near this
    min_feedback: int = 5  # reviews since the last retune before a slot is retuned
    raise_factor: float = 1.15
    lower_factor: float = 0.95  # gentler than raising: a missed incident costs more than a false alarm
    retune_interval_ms: int = 7 * DAY_MS
    min_stddev: float = 1.0  # stddev floor in metric units: near-constant counts must not make 1 event a 10-sigma
    rel_stddev: float = 0.25  # and a floor relative to the mean: a quarter of it (distances in metres)
    poisson_floor: float = 1.0  # and counting noise: sqrt(mean) times this (0 turns it off)
    max_pending: int = 512  # anomaly ids awaiting review, per site (oldest forgotten first)
    span_ms: int = 60 * 60_000  # metrics are sums over this trailing span (= the window size: raw windows)
    cooldown_ms: int = 60 * 60_000  # after an anomaly, the same metric is not flagged again for this long
    metrics: tuple[str, ...] = METRICS


DEFAULT_BASELINE_CONFIG = BaselineConfig()


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")  # an unknown zone in reference data must not stop the pipeline


def hour_of_week(ms: int, timezone: str) -> int:
    """0..167 in the site's local time, Monday 00h = 0 (DST-aware)."""
    dt = datetime.fromtimestamp(ms / 1000, UTC).astimezone(_zone(timezone))
    return dt.weekday() * 24 + dt.hour


def welford(n: int, mean: float, m2: float, x: float) -> tuple[int, float, float]:
    """One step of Welford's online mean/variance."""
    n += 1
    delta = x - mean
    mean += delta / n
    m2 += delta * (x - mean)
    return n, mean, m2


def sample_stddev(n: int, m2: float) -> float:
    return math.sqrt(m2 / (n - 1)) if n > 1 and m2 > 0 else 0.0


def severity(score: float, threshold: float) -> str:
    """From how far past the threshold the z-score is."""
    r = abs(score) / threshold if threshold > 0 else math.inf
    return "LOW" if r < 1.25 else "MEDIUM" if r < 1.75 else "HIGH" if r < 2.5 else "CRITICAL"


def verdict_from_resolution(resolution: str | None) -> Verdict | None:
    """A ticket resolution as review feedback: FALSE_POSITIVE, or CONFIRMED for FRAUD_CONFIRMED; else None."""
    if resolution == "FALSE_POSITIVE":
        return "FALSE_POSITIVE"
    if resolution == "FRAUD_CONFIRMED":
        return "CONFIRMED"
    return None


class SiteBaselines:
    """All baselines of one site."""

    def __init__(self, tenant_id: int, site_id: str, cfg: BaselineConfig = DEFAULT_BASELINE_CONFIG) -> None:
        self.cfg = cfg
        self.tenant_id = tenant_id
        self.site_id = site_id
        self.slots: dict[str, list[Any]] = {}  # "metric|hour_of_week" -> slot
        self.pending: dict[str, str] = {}  # anomaly id -> slot key, until reviewed
        self.last_retune: int | None = None
        self.first_start: int | None = None  # the first window seen: no judging until a full span is seen
        self.recent: list[list[Any]] = []  # [window_start, *metric values] within the trailing span
        self.quiet_until: dict[str, int] = {}  # metric -> no new anomaly before this window end

    @classmethod
    def new(cls, tenant_id: int, site_id: str, cfg: BaselineConfig = DEFAULT_BASELINE_CONFIG) -> SiteBaselines:
        return cls(tenant_id, site_id, cfg)

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "tenant_id": self.tenant_id, "site_id": self.site_id,
                "slots": {k: list(v) for k, v in self.slots.items()},
                "pending": [[a, k] for a, k in self.pending.items()], "last_retune": self.last_retune,
                "first_start": self.first_start, "recent": [list(r) for r in self.recent],
                "quiet_until": dict(self.quiet_until)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], cfg: BaselineConfig = DEFAULT_BASELINE_CONFIG) -> SiteBaselines:
        b = cls(int(d["tenant_id"]), str(d["site_id"]), cfg)
        b.slots = {k: list(v) for k, v in d["slots"].items()}
        b.pending = {a: k for a, k in d["pending"]}
        b.last_retune = d["last_retune"]
        b.first_start = d["first_start"]
        b.recent = [list(r) for r in d["recent"]]
        b.quiet_until = {k: int(v) for k, v in d["quiet_until"].items()}
        return b

    # -- records --------------------------------------------------------------------------------------

    def baseline_id(self, metric: str, how: int) -> str:
        return f"{self.tenant_id}:{self.site_id}:{metric}:{how}"

    def baseline_record(self, slot_key: str) -> Record:
        metric, how_s = slot_key.rsplit("|", 1)
        how = int(how_s)
        s = self.slots[slot_key]
        fb, fp = int(s[FB]), int(s[FP])
        return {
            "baseline_id": self.baseline_id(metric, how), "tenant_id": self.tenant_id, "site_id": self.site_id,
            "metric": metric, "hour_of_week": how, "sample_count": int(s[N]), "mean": float(s[MEAN]),
            "m2": float(s[M2]), "stddev": sample_stddev(int(s[N]), float(s[M2])),
            "is_stable": self._stable(s), "dynamic_threshold": float(s[THRESHOLD]),
            "false_positive_rate": fp / fb if fb else 0.0, "feedback_total": fb, "false_positives": fp,
            "last_threshold_update": s[LAST_TUNE], "updated_at": int(s[UPDATED])}

    def _stable(self, s: list[Any]) -> bool:
        return int(s[N]) >= self.cfg.min_samples and int(s[UPDATED]) - int(s[FIRST]) >= self.cfg.min_age_ms

    def _out(self, slot_key: str) -> Out:
        rec = self.baseline_record(slot_key)
        return Out("baselines", rec["baseline_id"].encode(), "baseline", rec)

    # -- steps ----------------------------------------------------------------------------------------

    def observe_window(self, window: Record, timezone: str) -> list[Out]:
        """Score a closed SITE window (its trailing-span sums) against its slots, then learn from it. Windows
        of one site must come in time order (as SiteWindows closes them). Returns any baselines a scheduled
        retune changed, then the anomalies, then the updated baselines."""
        cfg = self.cfg
        start, at = int(window["window_start"]), int(window["window_end"])
        outs: list[Out] = []
        if self.last_retune is None:
            self.last_retune = at
        elif at >= self.last_retune + cfg.retune_interval_ms:
            outs.extend(self.retune(at))
        self.recent.append([start, *(float(window[m]) for m in cfg.metrics)])
        self.recent = [r for r in self.recent if r[0] > at - cfg.span_ms - 1 and r[0] <= start]
        if self.first_start is None:
            self.first_start = start
        if at - self.first_start < cfg.span_ms:
            return outs  # a partial span would teach the baseline a dip that never happened
        how = hour_of_week(start, timezone)
        anomalies: list[Out] = []
        updated: list[Out] = []
        for i, metric in enumerate(cfg.metrics, start=1):
            x = round(sum(float(r[i]) for r in self.recent if r[0] >= at - cfg.span_ms), 6)
            key = f"{metric}|{how}"
            s = self.slots.get(key)
            if s is None:
                s = self.slots[key] = [0, 0.0, 0.0, cfg.default_threshold, 0, 0, 0, 0, None, at, at]
            n, mean, m2 = int(s[N]), float(s[MEAN]), float(s[M2])
            s[UPDATED] = at
            learn = x
            if self._stable(s):
                sd = sample_stddev(n, m2)
                scale = max(sd, cfg.min_stddev, cfg.rel_stddev * abs(mean), cfg.poisson_floor * math.sqrt(abs(mean)))
                z = (x - mean) / scale
                thr = float(s[THRESHOLD])
                if abs(z) > thr:
                    # An outage must not teach the slot that outages are normal: learn the clipped value.
                    learn = mean + math.copysign(thr * scale, z)
                    if at >= self.quiet_until.get(metric, at):
                        self.quiet_until[metric] = at + cfg.cooldown_ms
                        anomalies.append(self._anomaly(window, metric, how, x, mean, sd, thr, z, key))
            s[N], s[MEAN], s[M2] = welford(n, mean, m2, learn)
            updated.append(self._out(key))
        return outs + anomalies + updated

    def _anomaly(self, window: Record, metric: str, how: int, x: float, mean: float, sd: float, thr: float,
                 z: float, key: str) -> Out:
        aid = hashlib.sha1(f"{window['window_id']}|{metric}".encode()).hexdigest()
        self.pending[aid] = key
        while len(self.pending) > self.cfg.max_pending:
            del self.pending[next(iter(self.pending))]
        rec: Record = {
            "anomaly_id": aid, "tenant_id": self.tenant_id, "site_id": self.site_id,
            "person_id": window.get("person_id"), "window_id": window["window_id"],
            "baseline_id": self.baseline_id(metric, how), "metric": metric, "observed": x, "expected": mean,
            "stddev": sd, "threshold": thr, "score": round(z, 6), "severity": severity(z, thr),
            "window_start": int(window["window_start"]), "window_end": int(window["window_end"])}
        return Out("anomalies", person_key(self.tenant_id, window.get("person_id"), self.site_id), "anomaly", rec)

    def feedback(self, anomaly_id: str, verdict: Verdict, at_ms: int) -> list[Out]:
        """Count a review of an anomaly this site raised. Each id counts once; unknown ids are ignored."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be FALSE_POSITIVE or CONFIRMED, got {verdict!r}")
        key = self.pending.pop(anomaly_id, None)
        if key is None:
            return []
        s = self.slots[key]
        s[FB] += 1
        if verdict == "FALSE_POSITIVE":
            s[FP] += 1
        s[UPDATED] = max(int(s[UPDATED]), at_ms)
        return [self._out(key)]

    def retune(self, at_ms: int) -> list[Out]:
        """Retune every slot with at least ``min_feedback`` reviews since its last retune."""
        cfg = self.cfg
        outs: list[Out] = []
        self.last_retune = at_ms
        for key in sorted(self.slots):
            s = self.slots[key]
            reviewed = int(s[FB]) - int(s[FB_MARK])
            if reviewed < cfg.min_feedback:
                continue
            rate = (int(s[FP]) - int(s[FP_MARK])) / reviewed
            s[FB_MARK], s[FP_MARK] = s[FB], s[FP]
            old = float(s[THRESHOLD])
            new = old
            if rate > cfg.target_fp_rate:
                new = min(cfg.max_threshold, old * cfg.raise_factor)
            elif rate < cfg.target_fp_rate / 2:
                new = max(cfg.min_threshold, old * cfg.lower_factor)
            if new != old:
                s[THRESHOLD] = round(new, 6)
                s[LAST_TUNE] = at_ms
                s[UPDATED] = max(int(s[UPDATED]), at_ms)
                outs.append(self._out(key))
        return outs


__all__ = ["DEFAULT_BASELINE_CONFIG", "METRICS", "BaselineConfig", "SiteBaselines", "Verdict", "hour_of_week",
           "sample_stddev", "severity", "verdict_from_resolution", "welford"]
