"""Ranking metrics for imbalanced fraud labels (plain numpy, no scikit-learn)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

Arr = npt.ArrayLike


def _sorted_counts(y: Arr, p: Arr) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Cumulative true/false positives at each distinct threshold, highest score first."""
    yt = np.asarray(y, dtype=np.float64)
    ps = np.asarray(p, dtype=np.float64)
    order = np.argsort(-ps, kind="mergesort")
    ys, ss = yt[order], ps[order]
    last = np.r_[np.nonzero(np.diff(ss))[0], ys.size - 1]  # last index of each tie group
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    return tp, fp, ss[last]


def pr_auc(y: Arr, p: Arr) -> float:
    """Average precision (area under the precision-recall step curve, as scikit-learn computes it)."""
    tp, fp, _ = _sorted_counts(y, p)
    pos = tp[-1] if tp.size else 0.0
    if pos == 0:
        return float("nan")
    precision = tp / (tp + fp)
    recall = tp / pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(y: Arr, p: Arr) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    tp, fp, _ = _sorted_counts(y, p)
    if tp.size == 0 or tp[-1] == 0 or fp[-1] == 0:
        return float("nan")
    tpr = np.r_[0.0, tp / tp[-1]]
    fpr = np.r_[0.0, fp / fp[-1]]
    return float(np.trapezoid(tpr, fpr))


def precision_at_recall(y: Arr, p: Arr, recall: float = 0.8) -> tuple[float, float]:
    """Best precision among thresholds reaching at least ``recall``, and that threshold."""
    tp, fp, thr = _sorted_counts(y, p)
    if tp.size == 0 or tp[-1] == 0:
        return float("nan"), float("nan")
    ok = tp / tp[-1] >= recall - 1e-12
    prec = np.where(ok, tp / (tp + fp), -1.0)
    i = int(np.argmax(prec))
    return float(prec[i]), float(thr[i])


def recall_by_group(y: Arr, p: Arr, groups: Sequence[str], threshold: float) -> dict[str, tuple[int, float]]:
    """Per group (scenario): (positives, share of them scored >= threshold)."""
    yt = np.asarray(y, dtype=bool)
    hit = np.asarray(p, dtype=np.float64) >= threshold
    g = np.asarray(groups, dtype=object)
    out: dict[str, tuple[int, float]] = {}
    for name in sorted({str(x) for x in g[yt]}):
        m = yt & (g == name)
        n = int(m.sum())
        out[name] = (n, float(hit[m].mean()) if n else float("nan"))
    return out


@dataclass(frozen=True, slots=True)
class Metrics:
    pr_auc: float
    roc_auc: float
    precision_at_80_recall: float
    threshold_at_80_recall: float
    positives: int
    negatives: int

    @property
    def imbalance_ratio(self) -> float:
        """Negatives per positive."""
        return self.negatives / self.positives if self.positives else float("inf")

    def to_dict(self) -> dict[str, float]:
        d: dict[str, float] = dict(asdict(self))
        d["imbalance_ratio"] = self.imbalance_ratio
        return d


def evaluate(y: Arr, p: Arr) -> Metrics:
    yt = np.asarray(y, dtype=np.float64)
    prec, thr = precision_at_recall(yt, p, 0.8)
    pos = int(yt.sum())
    return Metrics(pr_auc(yt, p), roc_auc(yt, p), prec, thr, pos, int(yt.size - pos))
