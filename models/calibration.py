"""Probability calibration on held-out rows (isotonic regression) and the figures that check it.

The booster's log-odds rank punches well but their scale depends on class weighting and tree
regularisation, so "0.80" would not mean 80%. :func:`fit_isotonic` fits a monotone map from the offset
log-odds to the observed fraud rate on held-out rows (pool-adjacent-violators); the artifact stores its
knots and the scorer interpolates between them. :func:`cross_fitted` gives honest figures for the
report: each half of the holdout is calibrated by the map fitted on the other half.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
P_FLOOR, P_CEIL = 0.001, 0.999  # a calibrated score never claims certainty
BINS: tuple[float, ...] = (0.0, 0.05, 0.30, 0.60, 0.80, 1.0001)  # LOW split at 0.05, then the risk bands


def fit_isotonic(z: npt.ArrayLike, y: npt.ArrayLike) -> dict[str, Any]:
    """Isotonic (non-decreasing) fit of ``y`` on ``z``; knots at each pooled block's mean ``z``."""
    zs = np.asarray(z, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    order = np.argsort(zs, kind="mergesort")
    zs, ys = zs[order], ys[order]
    # blocks: [sum y, count, sum z]
    sums: list[float] = []
    counts: list[float] = []
    zsum: list[float] = []
    for zi, yi in zip(zs.tolist(), ys.tolist(), strict=True):
        sums.append(yi)
        counts.append(1.0)
        zsum.append(zi)
        while len(sums) > 1 and sums[-2] / counts[-2] >= sums[-1] / counts[-1]:
            s, c, zz = sums.pop(), counts.pop(), zsum.pop()
            sums[-1] += s
            counts[-1] += c
            zsum[-1] += zz
    x = [zz / c for zz, c in zip(zsum, counts, strict=True)]
    p = [min(max(s / c, P_FLOOR), P_CEIL) for s, c in zip(sums, counts, strict=True)]
    return {"method": "isotonic", "x": x, "y": p, "rows": int(ys.size), "positives": int(ys.sum())}


def apply(cal: dict[str, Any], z: npt.ArrayLike) -> F64:
    out: F64 = np.interp(np.asarray(z, dtype=np.float64), np.asarray(cal["x"], dtype=np.float64),
                         np.asarray(cal["y"], dtype=np.float64))
    return out


def cross_fitted(z: npt.ArrayLike, y: npt.ArrayLike) -> F64:
    """Calibrated probabilities of held-out rows, each from the map fitted on the other half (alternate rows
    in the given order, which is time order for a time-split holdout)."""
    zs = np.asarray(z, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    out = np.empty_like(zs)
    idx = np.arange(zs.size)
    for part in (0, 1):
        mine, other = idx % 2 == part, idx % 2 != part
        out[mine] = apply(fit_isotonic(zs[other], ys[other]), zs[mine])
    return out


@dataclass(frozen=True, slots=True)
class Bin:
    lo: float
    hi: float
    n: int
    mean_predicted: float
    observed: float  # share of fraud among the rows scored in the bin


def reliability(y: npt.ArrayLike, p: npt.ArrayLike, bins: tuple[float, ...] = BINS) -> list[Bin]:
    ys = np.asarray(y, dtype=np.float64)
    ps = np.asarray(p, dtype=np.float64)
    out = []
    for lo, hi in itertools.pairwise(bins):
        m = (ps >= lo) & (ps < hi)
        n = int(m.sum())
        out.append(Bin(lo, min(hi, 1.0), n, float(ps[m].mean()) if n else float("nan"),
                       float(ys[m].mean()) if n else float("nan")))
    return out


def at_threshold(y: npt.ArrayLike, p: npt.ArrayLike, threshold: float) -> tuple[float, float]:
    """(precision, recall) of flagging the rows scored at or above ``threshold``."""
    ys = np.asarray(y, dtype=bool)
    hit = np.asarray(p, dtype=np.float64) >= threshold
    tp = int((hit & ys).sum())
    precision = tp / int(hit.sum()) if hit.any() else float("nan")
    recall = tp / int(ys.sum()) if ys.any() else float("nan")
    return precision, recall


def format_reliability(rows: list[Bin]) -> str:
    lines = [f"  {'score band':14} {'rows':>6} {'mean score':>10} {'fraud seen':>10}"]
    for b in rows:
        lines.append(f"  {b.lo:4.2f} - {b.hi:4.2f}    {b.n:6d} {b.mean_predicted:10.3f} {b.observed:10.3f}")
    return "\n".join(lines)


__all__ = ["BINS", "Bin", "apply", "at_threshold", "cross_fitted", "fit_isotonic", "format_reliability",
           "reliability"]
