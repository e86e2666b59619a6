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

import base64
import hashlib
import math
import sys
import zlib
from array import array
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

HOURS_OF_WEEK = 168
# Packed Welford state of a slot, in SiteBaselines.stats; review state in SiteBaselines.tuning.
N, MEAN, M2, UPDATED, FIRST = range(5)
_FIELDS = 5
THRESHOLD, FB, FP, FB_MARK, FP_MARK, LAST_TUNE = range(6)


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
    """All baselines of one site.

    Memory: the Welford state of every metric x hour-of-week slot lives in one packed ``array('d')`` (5
    doubles a slot, ~34 KB a site for all 840 slots) rather than 840 Python lists (~340 KB); the rarer
    review/threshold state of a slot is a small list in ``tuning``, created on its first review.
    """

    def __init__(self, tenant_id: int, site_id: str, cfg: BaselineConfig = DEFAULT_BASELINE_CONFIG) -> None:
        self.cfg = cfg
        self.tenant_id = tenant_id
        self.site_id = site_id
        self._metric_index = {m: i for i, m in enumerate(cfg.metrics)}
        self.stats = array("d", bytes(8 * _FIELDS * HOURS_OF_WEEK * len(cfg.metrics)))
        self.tuning: dict[str, list[Any]] = {}  # "metric|hour_of_week" -> [threshold, fb, fp, fb_mark, ...]
        self.pending: dict[str, str] = {}  # anomaly id -> slot key, until reviewed
        self.last_retune: int | None = None
        self.first_start: int | None = None  # the first window seen: no judging until a full span is seen
        self.recent: list[list[Any]] = []  # [window_start, *metric values] within the trailing span
        self.quiet_until: dict[str, int] = {}  # metric -> no new anomaly before this window end

    @classmethod
    def new(cls, tenant_id: int, site_id: str, cfg: BaselineConfig = DEFAULT_BASELINE_CONFIG) -> SiteBaselines:
        return cls(tenant_id, site_id, cfg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; the packed stats travel as base64 of zlib of little-endian doubles. Level 1: a site is
        serialised at every state flush, and level 6 cost ~3x the time (the site stage's largest cost) for ~5%
        smaller values."""
        raw = self.stats
        if sys.byteorder != "little":  # pragma: no cover - big-endian hosts only
            raw = array("d", raw)
            raw.byteswap()
        return {"v": 2, "tenant_id": self.tenant_id, "site_id": self.site_id,
                "stats": base64.b64encode(zlib.compress(raw.tobytes(), 1)).decode("ascii"),
                "tuning": {k: list(v) for k, v in sorted(self.tuning.items())},
                "pending": [[a, k] for a, k in self.pending.items()], "last_retune": self.last_retune,
                "first_start": self.first_start, "recent": [list(r) for r in self.recent],
                "quiet_until": dict(self.quiet_until)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], cfg: BaselineConfig = DEFAULT_BASELINE_CONFIG) -> SiteBaselines:
        b = cls(int(d["tenant_id"]), str(d["site_id"]), cfg)
        stats = array("d")
        stats.frombytes(zlib.decompress(base64.b64decode(d["stats"])))
        if sys.byteorder != "little":  # pragma: no cover - big-endian hosts only
            stats.byteswap()
        if len(stats) != len(b.stats):
            raise ValueError(f"baseline state has {len(stats)} values, config needs {len(b.stats)} (metrics changed?)")
        b.stats = stats
        b.tuning = {k: list(v) for k, v in d["tuning"].items()}
        b.pending = {a: k for a, k in d["pending"]}
        b.last_retune = d["last_retune"]
        b.first_start = d["first_start"]
        b.recent = [list(r) for r in d["recent"]]
        b.quiet_until = {k: int(v) for k, v in d["quiet_until"].items()}
        return b

    def _base(self, slot_key: str) -> int:
        metric, how = slot_key.rsplit("|", 1)
        return (self._metric_index[metric] * HOURS_OF_WEEK + int(how)) * _FIELDS

    def _tune(self, slot_key: str) -> list[Any]:
        """The slot's review/threshold state: [threshold, fb, fp, fb_mark, fp_mark, last_threshold_update]."""
        t = self.tuning.get(slot_key)
        if t is None:
            t = self.tuning[slot_key] = [self.cfg.default_threshold, 0, 0, 0, 0, None]
        return t

    def _threshold(self, slot_key: str) -> float:
        t = self.tuning.get(slot_key)
        return float(t[0]) if t is not None else self.cfg.default_threshold

    # -- records --------------------------------------------------------------------------------------

    def baseline_id(self, metric: str, how: int) -> str:
        return f"{self.tenant_id}:{self.site_id}:{metric}:{how}"

    def baseline_record(self, slot_key: str) -> Record:
        metric, how_s = slot_key.rsplit("|", 1)
        how = int(how_s)
        b, st = self._base(slot_key), self.stats
        n, m2 = int(st[b + N]), st[b + M2]
        t = self.tuning.get(slot_key)
        fb, fp = (int(t[FB]), int(t[FP])) if t is not None else (0, 0)
        return {
            "baseline_id": self.baseline_id(metric, how), "tenant_id": self.tenant_id, "site_id": self.site_id,
            "metric": metric, "hour_of_week": how, "sample_count": n, "mean": st[b + MEAN], "m2": m2,
            "stddev": sample_stddev(n, m2), "is_stable": self._stable(b),
            "dynamic_threshold": self._threshold(slot_key),
            "false_positive_rate": fp / fb if fb else 0.0, "feedback_total": fb, "false_positives": fp,
            "last_threshold_update": t[LAST_TUNE] if t is not None else None, "updated_at": int(st[b + UPDATED])}

    def _stable(self, b: int) -> bool:
        st = self.stats
        return st[b + N] >= self.cfg.min_samples and st[b + UPDATED] - st[b + FIRST] >= self.cfg.min_age_ms

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
        st = self.stats
        for i, metric in enumerate(cfg.metrics, start=1):
            x = round(sum(float(r[i]) for r in self.recent if r[0] >= at - cfg.span_ms), 6)
            key = f"{metric}|{how}"
            b = self._base(key)
            n, mean, m2 = int(st[b + N]), st[b + MEAN], st[b + M2]
            if n == 0:
                st[b + FIRST] = at
            st[b + UPDATED] = at
            learn = x
            if self._stable(b):
                sd = sample_stddev(n, m2)
                scale = max(sd, cfg.min_stddev, cfg.rel_stddev * abs(mean), cfg.poisson_floor * math.sqrt(abs(mean)))
                z = (x - mean) / scale
                thr = self._threshold(key)
                if abs(z) > thr:
                    # An outage must not teach the slot that outages are normal: learn the clipped value.
                    learn = mean + math.copysign(thr * scale, z)
                    if at >= self.quiet_until.get(metric, at):
                        self.quiet_until[metric] = at + cfg.cooldown_ms
                        anomalies.append(self._anomaly(window, metric, how, x, mean, sd, thr, z, key))
            n, st[b + MEAN], st[b + M2] = welford(n, mean, m2, learn)
            st[b + N] = n
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
        t = self._tune(key)
        t[FB] += 1
        if verdict == "FALSE_POSITIVE":
            t[FP] += 1
        self._touch(key, at_ms)
        return [self._out(key)]

    def _touch(self, slot_key: str, at_ms: int) -> None:
        b = self._base(slot_key)
        self.stats[b + UPDATED] = max(self.stats[b + UPDATED], at_ms)

    def retune(self, at_ms: int) -> list[Out]:
        """Retune every slot with at least ``min_feedback`` reviews since its last retune."""
        cfg = self.cfg
        outs: list[Out] = []
        self.last_retune = at_ms
        for key in sorted(self.tuning):
            t = self.tuning[key]
            reviewed = int(t[FB]) - int(t[FB_MARK])
            if reviewed < cfg.min_feedback:
                continue
            rate = (int(t[FP]) - int(t[FP_MARK])) / reviewed
            t[FB_MARK], t[FP_MARK] = t[FB], t[FP]
            old = float(t[THRESHOLD])
            new = old
            if rate > cfg.target_fp_rate:
                new = min(cfg.max_threshold, old * cfg.raise_factor)
            elif rate < cfg.target_fp_rate / 2:
                new = max(cfg.min_threshold, old * cfg.lower_factor)
            if new != old:
                t[THRESHOLD] = round(new, 6)
                t[LAST_TUNE] = at_ms
                self._touch(key, at_ms)
                outs.append(self._out(key))
        return outs


__all__ = ["DEFAULT_BASELINE_CONFIG", "HOURS_OF_WEEK", "METRICS", "BaselineConfig", "SiteBaselines", "Verdict",
           "hour_of_week", "sample_stddev", "severity", "verdict_from_resolution", "welford"]
