"""Fraud model quality: train on one simulator seed, evaluate on a held-out seed.

    python tests/bench/bench_model_quality.py [--train-seed 11] [--test-seed 12] [--days 60] [--algo auto]

Reports PR-AUC, precision at 80% recall, ROC-AUC, the imbalance, recall per fraud scenario at the
80%-recall threshold and at the MEDIUM band (p >= 0.30), and the rule-based fallback on the same data.
Targets: PR-AUC >= 0.90 and precision >= 0.90 at 80% recall on the held-out seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from models.metrics import evaluate, recall_by_group
from models.progress import Progress
from models.scoring import RuleScorer
from models.train import Dataset, TrainConfig, build_dataset, time_split, train_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))


def dataset(seed: int, days: int) -> tuple[Dataset, str]:
    try:
        from models.simsource import sim_history

        return build_dataset(sim_history(seed, days), progress=Progress()), "simulator"
    except ImportError:
        from models_world import world

        return build_dataset(world(days=days, people=40, fraud_rate=0.06, seed=seed)), "hand-made test world"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-seed", type=int, default=11)
    ap.add_argument("--test-seed", type=int, default=12)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--algo", choices=("xgboost", "lightgbm", "auto"), default="auto")
    args = ap.parse_args()

    t0 = time.perf_counter()
    train_all, source = dataset(args.train_seed, args.days)
    test, _ = dataset(args.test_seed, args.days)
    print(f"data: {source}, {args.days} days; train seed {args.train_seed}: {len(train_all):,} labelled punches "
          f"({train_all.positives:,} fraud); test seed {args.test_seed}: {len(test):,} ({test.positives:,} fraud) "
          f"[{time.perf_counter() - t0:.1f}s]")
    # Model selection (auto) uses a time-split holdout of the training seed; the test seed stays unseen.
    fit_part, select_part = time_split(train_all, 0.2)
    t0 = time.perf_counter()
    result = train_model(fit_part, select_part, args.algo, None, datetime.now(UTC), TrainConfig(), Progress())
    print(f"trained {result.artifact.algorithm} ({', '.join(result.candidates)} tried) "
          f"in {time.perf_counter() - t0:.1f}s")

    p = result.scorer.predict_proba(test.X)
    m = evaluate(test.y, p)
    rules = np.array([r.fraud_probability for r in RuleScorer().score_many(test.X.tolist())])
    mr = evaluate(test.y, rules)
    print()
    print(f"{'held-out seed':24} {'PR-AUC':>8} {'P@80%R':>8} {'ROC-AUC':>8}")
    print(f"{'model ' + result.artifact.algorithm:24} {m.pr_auc:8.4f} {m.precision_at_80_recall:8.4f} {m.roc_auc:8.4f}")
    print(f"{'rules-v1 fallback':24} {mr.pr_auc:8.4f} {mr.precision_at_80_recall:8.4f} {mr.roc_auc:8.4f}")
    print(f"imbalance 1:{m.imbalance_ratio:.1f} (negatives per positive), {m.positives} fraud in the test seed")
    print()
    at80 = recall_by_group(test.y, p, test.scenarios, m.threshold_at_80_recall)
    at_medium = recall_by_group(test.y, p, test.scenarios, 0.30)
    print(f"{'scenario':20} {'fraud':>6} {'recall@thr80':>13} {'recall p>=0.30':>15}")
    for name, (n, rec) in at80.items():
        print(f"{name:20} {n:6d} {rec:13.3f} {at_medium[name][1]:15.3f}")
    print(f"(thr80 = {m.threshold_at_80_recall:.4f}; scenario of a positive is the label's scenario)")
    legit = test.y == 0
    print(f"false-positive rate among legitimate punches: {float((p[legit] >= m.threshold_at_80_recall).mean()):.4f} "
          f"at thr80, {float((p[legit] >= 0.30).mean()):.4f} at p >= 0.30")
    ok = m.pr_auc >= 0.90 and m.precision_at_80_recall >= 0.90
    print(f"\ntargets PR-AUC >= 0.90 and precision >= 0.90 at 80% recall: {'MET' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
