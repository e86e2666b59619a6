"""Fraud model quality, in distribution and under distribution shift.

    python tests/bench/bench_model_quality.py [--train-variation randomised|standard] [--train-seed 11]
        [--days 30] [--test-days 20] [--algo xgboost|lightgbm|auto] [--json FILE]

Trains the way ``noc train --from-sim`` does (time-split holdout for model selection and calibration) on
``--days`` of one simulator variation, then scores:

- ``standard/held-out``: a held-out seed of the standard world at its default rates (the figure this
  bench has always reported);
- ``<train variation>/held-out`` when training on another variation than standard;
- the held-out shifted variations ``careful``, ``noisy`` and ``blend`` (``simulator/variation.py``): the same
  seven frauds and the same look-alikes drawn from other parameter ranges, with 10% of shifts fraudulent
  and twice the look-alikes, so each scenario and look-alike kind has a few dozen cases.

Per set: PR-AUC, precision at 80% recall, recall at the ticket threshold (0.80) overall and per scenario,
false positives per 1,000 legit punches overall and per look-alike kind. The headline is the worst of
the shifted sets. Aims there: PR-AUC >= 0.90, precision >= 0.80 at 80% recall, recall >= 0.70 at 0.80 for
every scenario, <= 1 false positive per 1,000 legit punches for every look-alike kind. ``--train-variation
standard`` measures a model trained on the standard world the same way (the "before").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

import numpy as np

from models.progress import Progress
from models.scoring import RuleScorer
from models.shifted import SetSpec, format_reports, score_sets, shifted_specs, simulate_set, worst
from models.train import TrainConfig, build_dataset, time_split, train_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-variation", default="randomised", help="simulator variation to train on")
    ap.add_argument("--train-seed", type=int, default=11)
    ap.add_argument("--test-seed", type=int, default=12)
    ap.add_argument("--days", type=float, default=30, help="simulated days to train on (default 30)")
    ap.add_argument("--test-days", type=float, default=20, help="simulated days per evaluation set (default 20)")
    ap.add_argument("--algo", choices=("xgboost", "lightgbm", "auto"), default="xgboost")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    prog = Progress()

    t0 = time.perf_counter()
    from models.simsource import sim_history

    ds = build_dataset(sim_history(args.train_seed, args.days, variation=args.train_variation), progress=prog)
    fit_part, select_part = time_split(ds, 0.2)
    result = train_model(fit_part, select_part, args.algo, None, datetime.now(UTC), TrainConfig(), prog)
    scorer = result.scorer
    print(f"trained {result.artifact.algorithm} on {args.days:g} days of {args.train_variation!r} seed "
          f"{args.train_seed}: {len(fit_part):,} rows ({fit_part.positives:,} fraud), selection/calibration "
          f"holdout {len(select_part):,} [{time.perf_counter() - t0:.1f}s]")

    specs = [SetSpec("standard/held-out", "standard", args.test_seed)]
    if args.train_variation != "standard":
        specs.append(SetSpec(f"{args.train_variation}/held-out", args.train_variation, args.test_seed))
    shifted = shifted_specs()
    t0 = time.perf_counter()
    sets = [simulate_set(s, args.test_days, prog) for s in [*specs, *shifted]]
    print(f"evaluation sets: {', '.join(f'{s.name} ({len(s.ds):,} punches, {s.ds.positives} fraud)' for s in sets)} "
          f"[{time.perf_counter() - t0:.1f}s]")
    reports = score_sets(scorer.predict_proba, sets)
    print()
    print(f"model {scorer.model_version} (trained on {args.train_variation}):")
    print(format_reports(reports))
    rules = score_sets(lambda X: np.array([r.fraud_probability for r in RuleScorer().score_many(X.tolist())]), sets)
    print()
    print("rules-v1 fallback: " + "; ".join(f"{r.name} PR-AUC {r.metrics.pr_auc:.3f} "
                                            f"P@80R {r.metrics.precision_at_80_recall:.3f}" for r in rules))
    w = worst([r for r in reports if r.name in {s.name for s in shifted}])
    print()
    print("worst over the shifted sets (the headline):")
    print(f"  PR-AUC {w['pr_auc'][0]:.3f} ({w['pr_auc'][1]}), precision@80%recall "
          f"{w['precision_at_80_recall'][0]:.3f} ({w['precision_at_80_recall'][1]}), "
          f"scenario recall@0.80 {w['scenario_recall_at_ticket'][0]:.2f} ({w['scenario_recall_at_ticket'][1]}), "
          f"look-alike FP/1k {w['lookalike_fp_per_1000'][0]:.1f} ({w['lookalike_fp_per_1000'][1]})")
    ok = (w["pr_auc"][0] >= 0.90 and w["precision_at_80_recall"][0] >= 0.80
          and w["scenario_recall_at_ticket"][0] >= 0.70 and w["lookalike_fp_per_1000"][0] <= 1.0)
    print(f"aims (PR-AUC >= 0.90, P@80R >= 0.80, every scenario recall@0.80 >= 0.70, every look-alike "
          f"<= 1 FP per 1,000): {'MET' if ok else 'NOT MET'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"train_variation": args.train_variation, "algorithm": result.artifact.algorithm,
                       "sets": [r.to_dict() for r in reports], "worst": w}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
