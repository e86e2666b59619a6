"""Per-event fraud scoring latency: the naive path beside the cached inline path, in one run.

    python tests/bench/bench_scoring.py [--events 20000] [--rate 5000] [--window-ms 10] [--seed 7] [--days 30]

Naive: one ``xgboost.DMatrix`` + ``predict`` per event (no reasons). Inline: the production
``Scorer.score_many`` on micro-batches of the events arriving in ``--window-ms`` at ``--rate`` events/s,
with the calibration map and top-3 reasons described in words for every event (compiled forest, Saabas
contributions). Per-event cost of a batch is its time divided by its size ("amortised"); percentiles are
over events. The two paths alternate in rounds so machine noise hits both. Also shown for reference:
xgboost ``inplace_predict`` and LightGBM ``predict`` on the same micro-batches (no reasons), exact
TreeSHAP per event, and feature building.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from models.features import FEATURE_NAMES, HistoryFeaturizer
from models.scoring import Scorer
from models.train import TrainConfig, build_dataset, calibrate, fit, time_split


def history(seed: int, days: float) -> list[tuple[str, dict[str, object]]]:
    """Simulator history when the simulator is there, else the tests' hand-made world."""
    try:
        from models.simsource import sim_history

        return list(sim_history(seed, days, variation="randomised"))
    except ImportError:
        from models_world import world

        return world(days=40, people=40, fraud_rate=0.08, seed=seed)


def pct(values: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--rate", type=int, default=5_000, help="arrival rate, events/s")
    ap.add_argument("--window-ms", type=float, default=10.0, help="micro-batch window")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=float, default=30, help="simulated days of history to train on")
    args = ap.parse_args()
    import lightgbm as lgb
    import xgboost as xgb

    t0 = time.perf_counter()
    items = history(args.seed, args.days)
    ds = build_dataset(items)
    print(f"history: {len(items):,} records -> {len(ds):,} labelled punches ({ds.positives:,} fraud) "
          f"in {time.perf_counter() - t0:.1f}s")
    cfg = TrainConfig(n_trees=200, max_depth=6)
    t0 = time.perf_counter()
    fit_part, hold = time_split(ds, 0.2)
    art = calibrate(fit("xgboost", fit_part, "bench-xgb", cfg), hold)  # inline applies the calibration map too
    lart = fit("lightgbm", fit_part, "bench-lgb", cfg)
    print(f"trained xgboost + lightgbm, {cfg.n_trees} trees, depth {cfg.max_depth}, {len(FEATURE_NAMES)} features, "
          f"in {time.perf_counter() - t0:.1f}s")
    scorer = Scorer(art)
    booster = xgb.Booster()
    booster.load_model(bytearray(art.booster.encode()))
    booster.set_param({"nthread": 1})
    lbooster = lgb.Booster(model_str=lart.booster)

    rng = np.random.default_rng(args.seed)
    X = ds.X[rng.integers(0, len(ds), args.events)]
    rows = X.tolist()
    batch = max(1, round(args.rate * args.window_ms / 1000))
    batches = [rows[i:i + batch] for i in range(0, len(rows), batch)]
    xb = [X[i:i + batch] for i in range(0, len(rows), batch)]
    names = list(FEATURE_NAMES)
    print(f"{args.events:,} events at {args.rate:,}/s in {args.window_ms:g} ms windows = micro-batches of {batch}")

    naive: list[float] = []
    inline: list[float] = []
    inline_cpu: list[float] = []  # CPU time of this thread: the cost without other processes' preemption
    per_round = max(1, len(rows) // args.rounds)
    for r in range(args.rounds):
        lo, hi = r * per_round, (r + 1) * per_round
        for row in X[lo:hi]:
            s = time.perf_counter()
            booster.predict(xgb.DMatrix(row[None, :], feature_names=names))
            naive.append(time.perf_counter() - s)
        for b in batches[lo // batch:hi // batch]:
            c = time.thread_time()
            s = time.perf_counter()
            scorer.score_many(b)
            cost = (time.perf_counter() - s) / len(b)
            inline_cpu.extend([(time.thread_time() - c) / len(b)] * len(b))
            inline.extend([cost] * len(b))
        print(f"  round {r + 1}/{args.rounds}: naive p50 {pct(naive, 50) * 1e6:.0f} µs, "
              f"inline p50 {pct(inline, 50) * 1e6:.1f} µs", file=sys.stderr)

    def per_event(fn: Callable[[np.ndarray], object]) -> list[float]:
        out: list[float] = []
        for b in xb:
            s = time.perf_counter()
            fn(b)
            out.extend([(time.perf_counter() - s) / len(b)] * len(b))
        return out

    inplace = per_event(lambda b: booster.inplace_predict(b))
    lgbm = per_event(lambda b: lbooster.predict(b, num_threads=1, predict_disable_shape_check=True))
    shap: list[float] = []
    for row in X[:200]:
        s = time.perf_counter()
        booster.predict(xgb.DMatrix(row[None, :], feature_names=names), pred_contribs=True)
        shap.append(time.perf_counter() - s)
    feat = HistoryFeaturizer()
    t0 = time.perf_counter()
    n_att = sum(1 for _ in feat.run(items))
    feat_s = time.perf_counter() - t0

    print()
    print(f"{'path (per event)':58} {'p50 µs':>9} {'p99 µs':>9}")
    for label, vals in (("naive: new DMatrix + predict, one event, no reasons", naive),
                        (f"inline: Scorer.score_many, batches of {batch}, top-3 reasons", inline),
                        (f"ref: xgboost inplace_predict, batches of {batch}, no reasons", inplace),
                        (f"ref: LightGBM predict, batches of {batch}, no reasons", lgbm),
                        ("ref: exact TreeSHAP (pred_contribs), one event", shap),
                        ("inline again, CPU time of the thread (no preemption)", inline_cpu)):
        print(f"{label:58} {pct(vals, 50) * 1e6:9.1f} {pct(vals, 99) * 1e6:9.1f}")
    inline_p99 = pct(inline, 99) * 1e6
    print()
    print(f"speed-up inline vs naive: p50 {pct(naive, 50) / pct(inline, 50):.1f}x, "
          f"p99 {pct(naive, 99) / pct(inline, 99):.1f}x (target >= 10x)")
    print(f"inline p99 {inline_p99:.1f} µs/event amortised (target <= 100): {'OK' if inline_p99 <= 100 else 'MISSED'}")
    print(f"inline capacity on one core: {1 / np.mean(inline):,.0f} events/s; a batch waits at most "
          f"{args.window_ms:g} ms + {pct(inline, 99) * batch * 1e3:.2f} ms to score")
    print(f"feature building (HistoryFeaturizer, all record kinds): {len(items) / feat_s:,.0f} records/s, "
          f"{feat_s / max(n_att, 1) * 1e6:.0f} µs per punch incl. its share of activity")
    load = os.getloadavg()
    print(f"run at {datetime.now(UTC):%Y-%m-%d %H:%M}Z on {os.cpu_count()} cores, load average "
          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min): p99 figures absorb other processes' bursts")


if __name__ == "__main__":
    main()
