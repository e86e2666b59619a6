"""Per-site baselines of the window signals, by site-local hour of the week, with self-tuning thresholds.

One :class:`SiteBaselines` per site (state key ``tenant:site``) holds a slot per metric x hour-of-week:
an online (Welford) mean and variance, review feedback counts and the slot's dynamic z threshold. Closed
SITE windows are scored against their slot (once it is stable) and then folded into it. Reviews of the
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
N, MEAN, M2, THRESHOLD, FB, FP, FB_MARK, FP_MARK, LAST_TUNE, UPDATED = range(10)


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    min_samples: int = 8  # windows before a slot may flag anomalies
    default_threshold: float = 3.0  # z
    min_threshold: float = 2.0
    max_threshold: float = 6.0
    target_fp_rate: float = 0.2  # retune holds the reviewed false-positive share near this
    min_feedback: int = 5  # reviews since the last retune before a slot is retuned
    raise_factor: float = 1.15
    lower_factor: float = 0.95  # gentler than raising: a missed incident costs more than a false alarm
    retune_interval_ms: int = 7 * DAY_MS
    min_stddev: float = 1.0  # stddev floor in metric units: near-constant counts must not make 1 event a 10-sigma
    rel_stddev: float = 0.1  # and a floor relative to the mean (distances in metres)
    max_pending: int = 512  # anomaly ids awaiting review, per site (oldest forgotten first)
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

    @classmethod
    def new(cls, tenant_id: int, site_id: str, cfg: BaselineConfig = DEFAULT_BASELINE_CONFIG) -> SiteBaselines:
        return cls(tenant_id, site_id, cfg)

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "tenant_id": self.tenant_id, "site_id": self.site_id,
                "slots": {k: list(v) for k, v in self.slots.items()},
                "pending": [[a, k] for a, k in self.pending.items()], "last_retune": self.last_retune}

    @classmethod
    def from_dict(cls, d: dict[str, Any], cfg: BaselineConfig = DEFAULT_BASELINE_CONFIG) -> SiteBaselines:
        b = cls(int(d["tenant_id"]), str(d["site_id"]), cfg)
        b.slots = {k: list(v) for k, v in d["slots"].items()}
        b.pending = {a: k for a, k in d["pending"]}
        b.last_retune = d["last_retune"]
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
            "is_stable": int(s[N]) >= self.cfg.min_samples, "dynamic_threshold": float(s[THRESHOLD]),
            "false_positive_rate": fp / fb if fb else 0.0, "feedback_total": fb, "false_positives": fp,
            "last_threshold_update": s[LAST_TUNE], "updated_at": int(s[UPDATED])}

    def _out(self, slot_key: str) -> Out:
        rec = self.baseline_record(slot_key)
        return Out("baselines", rec["baseline_id"].encode(), "baseline", rec)

    # -- steps ----------------------------------------------------------------------------------------

    def observe_window(self, window: Record, timezone: str) -> list[Out]:
        """Score a closed SITE window against its slots, then learn from it. Returns the anomalies, then the
        updated baselines (and any baselines a scheduled retune changed, first)."""
        cfg = self.cfg
        at = int(window["window_end"])
        outs: list[Out] = []
        if self.last_retune is None:
            self.last_retune = at
        elif at >= self.last_retune + cfg.retune_interval_ms:
            outs.extend(self.retune(at))
        how = hour_of_week(int(window["window_start"]), timezone)
        anomalies: list[Out] = []
        updated: list[Out] = []
        for metric in cfg.metrics:
            x = float(window[metric])
            key = f"{metric}|{how}"
            s = self.slots.get(key)
            if s is None:
                s = self.slots[key] = [0, 0.0, 0.0, cfg.default_threshold, 0, 0, 0, 0, None, at]
            n, mean, m2 = int(s[N]), float(s[MEAN]), float(s[M2])
            if n >= cfg.min_samples:
                sd = sample_stddev(n, m2)
                scale = max(sd, cfg.min_stddev, cfg.rel_stddev * abs(mean))
                z = (x - mean) / scale
                if abs(z) > s[THRESHOLD]:
                    anomalies.append(self._anomaly(window, metric, how, x, mean, sd, float(s[THRESHOLD]), z, key))
            s[N], s[MEAN], s[M2] = welford(n, mean, m2, x)
            s[UPDATED] = at
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
