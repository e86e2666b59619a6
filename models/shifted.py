"""Evaluation under distribution shift: a model scored on simulated worlds drawn with other parameters.

A model trained on one simulator variation (``simulator.variation``: ``randomised`` by default, or
``standard``) is scored on a held-out seed of the standard world and on the held-out *shifted*
variations (``careful``, ``noisy``, ``blend``), where the same seven frauds and the same legit
look-alikes are drawn from other ranges. Per set: PR-AUC, precision at 80% recall, recall at the ticket
threshold (0.80) per scenario, and false positives per 1,000 legit punches per look-alike kind. The
headline is the *worst* set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from models.metrics import Metrics, evaluate
from models.progress import ProgressFn, no_progress
from models.train import Dataset, build_dataset

TICKET_THRESHOLD = 0.80  # a fraud score at or above it opens a SECURITY_FRAUD ticket
DAY_MS = 86_400_000
PLAIN = "(plain legit)"


@dataclass(slots=True)
class EvalSet:
    name: str
    ds: Dataset
    lookalikes: list[str]  # per row: the look-alike kind of a legit check-in, else PLAIN ("" for frauds)


@dataclass(frozen=True, slots=True)
class SetSpec:
    """How to simulate one evaluation set."""

    name: str
    variation: str
    seed: int
    scenario_rate: float = 0.05
    hard_negatives: float = 1.0


def shifted_specs(seed: int = 101, scenario_rate: float = 0.10, hard_negatives: float = 2.0) -> list[SetSpec]:
    """The held-out shifted variations, one seed each (more frauds and look-alikes than the default world, so
    every scenario and look-alike kind has a few dozen cases in a short span)."""
    from simulator.variation import SHIFTED

    return [SetSpec(name, name, seed + i, scenario_rate, hard_negatives) for i, name in enumerate(SHIFTED)]


def simulate_set(spec: SetSpec, days: float, progress: ProgressFn = no_progress) -> EvalSet:
    """Featurize a simulated world (the serving feature code) and keep each row's look-alike kind."""
    from simulator.config import SimConfig
    from simulator.generate import Simulation

    sim = Simulation(SimConfig(seed=spec.seed, span=round(days * DAY_MS), scenario_rate=spec.scenario_rate,
                               hard_negatives=spec.hard_negatives, variation=spec.variation))
    ds = build_dataset(((sr.stem, sr.record) for sr in sim), progress=progress)
    kinds = [("" if y else sim.lookalikes.get(e, PLAIN)) for e, y in zip(ds.event_ids, ds.y, strict=True)]
    return EvalSet(spec.name, ds, kinds)


@dataclass(slots=True)
class SetReport:
    name: str
    metrics: Metrics
    recall_at_ticket: float
    fp_per_1000: float  # legit punches at or above the ticket threshold, per 1,000 legit punches
    by_scenario: dict[str, tuple[int, float]] = field(default_factory=dict)  # positives, recall at the threshold
    by_lookalike: dict[str, tuple[int, int]] = field(default_factory=dict)  # legit check-ins, false positives

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "pr_auc": self.metrics.pr_auc,
                "precision_at_80_recall": self.metrics.precision_at_80_recall,
                "recall_at_ticket": self.recall_at_ticket, "fp_per_1000": self.fp_per_1000,
                "positives": self.metrics.positives, "negatives": self.metrics.negatives,
                "by_scenario": {k: list(v) for k, v in self.by_scenario.items()},
                "by_lookalike": {k: list(v) for k, v in self.by_lookalike.items()}}


def assess(es: EvalSet, p: npt.NDArray[np.float64], threshold: float = TICKET_THRESHOLD) -> SetReport:
    y = es.ds.y.astype(bool)
    hit = p >= threshold
    scen = np.asarray(es.ds.scenarios, dtype=object)
    by_scenario: dict[str, tuple[int, float]] = {}
    for name in sorted({str(s) for s in scen[y]}):
        m = y & (scen == name)
        by_scenario[name] = (int(m.sum()), float(hit[m].mean()))
    kinds = np.asarray(es.lookalikes, dtype=object)
    by_lookalike: dict[str, tuple[int, int]] = {}
    for name in sorted({str(k) for k in kinds[~y]}):
        m = ~y & (kinds == name)
        by_lookalike[name] = (int(m.sum()), int(hit[m].sum()))
    legit = ~y
    return SetReport(es.name, evaluate(es.ds.y, p), float(hit[y].mean()) if y.any() else float("nan"),
                     1000.0 * float(hit[legit].mean()) if legit.any() else float("nan"), by_scenario, by_lookalike)


def per_1000(n: int, fp: int) -> float:
    return 1000.0 * fp / n if n else float("nan")


def worst(reports: Sequence[SetReport]) -> dict[str, Any]:
    """The headline: the worst figure of each kind over the sets, and where it was."""
    def low(key: Any) -> tuple[float, str]:
        return min(((float(key(r)), r.name) for r in reports), default=(float("nan"), ""))

    scen = [(rec, f"{r.name}/{s}") for r in reports for s, (_, rec) in r.by_scenario.items()]
    looks = [(per_1000(n, fp), f"{r.name}/{k}") for r in reports for k, (n, fp) in r.by_lookalike.items()
             if k != PLAIN and n]
    return {"pr_auc": low(lambda r: r.metrics.pr_auc),
            "precision_at_80_recall": low(lambda r: r.metrics.precision_at_80_recall),
            "scenario_recall_at_ticket": min(scen, default=(float("nan"), "")),
            "lookalike_fp_per_1000": max(looks, default=(float("nan"), ""))}


def format_reports(reports: Sequence[SetReport], threshold: float = TICKET_THRESHOLD) -> str:
    """Tables: one line per set, recall per scenario, false positives per look-alike kind."""
    out = [f"{'set':22} {'fraud':>6} {'legit':>7} {'PR-AUC':>7} {'P@80R':>7} {'R@' + format(threshold, '.2f'):>7} "
           f"{'FP/1k':>7}"]
    for r in reports:
        m = r.metrics
        out.append(f"{r.name:22} {m.positives:6d} {m.negatives:7d} {m.pr_auc:7.3f} {m.precision_at_80_recall:7.3f} "
                   f"{r.recall_at_ticket:7.3f} {r.fp_per_1000:7.2f}")
    names = [r.name[:12] for r in reports]
    scenarios = sorted({s for r in reports for s in r.by_scenario})
    out.append("")
    out.append(f"recall at {threshold:.2f} by scenario (n)".ljust(30) + "".join(f"{n:>17}" for n in names))
    for s in scenarios:
        cells = []
        for r in reports:
            n, rec = r.by_scenario.get(s, (0, float("nan")))
            cells.append(f"{rec:8.2f} ({n:4d})  " if n else f"{'-':>15}  ")
        out.append(f"{s:30}" + "".join(f"{c:>17}" for c in cells))
    kinds = sorted({k for r in reports for k in r.by_lookalike})
    out.append("")
    out.append(f"FP per 1,000 legit at {threshold:.2f} (fp/n)".ljust(30) + "".join(f"{n:>17}" for n in names))
    for k in kinds:
        cells = []
        for r in reports:
            n, fp = r.by_lookalike.get(k, (0, 0))
            cells.append(f"{per_1000(n, fp):6.1f} ({fp}/{n})  " if n else f"{'-':>15}  ")
        out.append(f"{k:30}" + "".join(f"{c:>17}" for c in cells))
    return "\n".join(out)


def score_sets(predict: Any, sets: Iterable[EvalSet], threshold: float = TICKET_THRESHOLD) -> list[SetReport]:
    """``predict(X) -> probabilities`` on each set."""
    return [assess(es, np.asarray(predict(es.ds.X), dtype=np.float64), threshold) for es in sets]


__all__ = ["PLAIN", "TICKET_THRESHOLD", "EvalSet", "SetReport", "SetSpec", "assess", "format_reports", "per_1000",
           "score_sets", "shifted_specs", "simulate_set", "worst"]
