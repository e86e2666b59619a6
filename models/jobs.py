"""The I/O around training: fetch history, train, report, register, compare-and-activate, publish."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from models.artifact import ArtifactError, write_artifact
from models.calibration import format_reliability
from models.progress import Progress, ProgressFn
from models.registry import ModelRow, Registry, model_event_record, publish_model_event
from models.scoring import Scorer
from models.train import (
    LATE_EVIDENCE_SCENARIOS,
    TICKET_THRESHOLD,
    Comparison,
    Dataset,
    TrainConfig,
    TrainResult,
    build_dataset,
    compare_on_holdout,
    rows_from,
    time_split,
    train_model,
)

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TrainJob:
    tenant: int | None
    days: int = 180
    test_size: float = 0.2
    algo: str = "auto"
    until_ms: int | None = None  # end of the history window (default: now)
    from_sim: int | None = None  # simulator seed instead of Kafka
    sim_variation: str = "randomised"  # how the simulator draws frauds and look-alikes (simulator.variation)
    shifted_days: float = 0.0  # > 0: also score the model on the held-out shifted simulator variations
    register: bool = True
    auto_activate: bool = False
    bootstrap: str = ""
    namespace: str = "noc"
    dsn: str = ""
    models_dir: Path = Path(".")
    config: TrainConfig = field(default_factory=TrainConfig)


@dataclass(slots=True)
class TrainOutcome:
    result: TrainResult
    test: Dataset
    row: ModelRow | None = None
    comparison: Comparison | None = None
    activated: bool = False


def history(job: TrainJob, progress: ProgressFn) -> tuple[Iterable[Any], int | None, int | None]:
    """The records to learn from, their count when known, and the time training rows start from (or None)."""
    if job.from_sim is not None:
        from models.simsource import sim_history

        return sim_history(job.from_sim, job.days, variation=job.sim_variation), None, None
    from models.history import ReplayStats, replay

    end = job.until_ms if job.until_ms is not None else int(time.time() * 1000)
    stats = ReplayStats()
    replayed = replay(job.bootstrap, job.namespace, end - job.days * DAY_MS, end, job.tenant, progress, stats)
    print(f"history: {stats.kept:,} of {stats.read:,} records read from namespace {job.namespace!r} kept "
          f"({_utc(end - job.days * DAY_MS)} to {_utc(end)}"
          f"{'' if job.tenant is None else f', tenant {job.tenant}'})", file=sys.stderr)
    if stats.undecodable:
        print(f"warning: {stats.undecodable:,} undecodable records skipped", file=sys.stderr)
    if stats.duplicates:
        print(f"note: {stats.duplicates:,} duplicate records (byte-identical redeliveries) read once", file=sys.stderr)
    first = rows_from(stats.starts)
    if first is not None:
        print(f"note: activity history starts at {_utc(stats.starts['activity'])} (topic retention), after the "
              f"attendance history: punches before {_utc(first)} only warm the state up and are not trained on",
              file=sys.stderr)
    return replayed, len(replayed), first


def _utc(ms: int) -> str:
    return f"{datetime.fromtimestamp(ms / 1000, UTC):%Y-%m-%d %H:%M}Z"


def run_training(job: TrainJob, out: TextIO = sys.stdout, progress: ProgressFn | None = None) -> TrainOutcome:
    """Train (raising TrainingDataError when the data is too thin), report, and register/activate."""
    prog = progress or Progress()
    items, total, first = history(job, prog)
    ds = build_dataset(items, job.tenant, prog, total, rows_from_ms=first)
    train, test = time_split(ds, job.test_size)
    print(f"dataset: {len(ds):,} labelled attendance events ({ds.unlabelled:,} unlabelled not used); "
          f"train {len(train):,} ({train.positives:,} fraud) / holdout {len(test):,} ({test.positives:,} fraud), "
          f"split by event time", file=out)
    trained_at = datetime.now(UTC)
    result = train_model(train, test, job.algo, job.tenant, trained_at, job.config, prog)
    print(report(result), file=out)
    if job.shifted_days > 0:
        print(shifted_report(result, job.shifted_days, prog), file=out)
    outcome = TrainOutcome(result, test)
    if not job.register:
        return outcome
    path, sha = write_artifact(result.artifact, job.models_dir)
    reg = Registry(job.dsn)
    outcome.row = reg.register(result.artifact, path, sha, job.tenant, result.metrics_dict(), trained_at)
    print(f"registered {outcome.row.version} ({path})", file=out)
    if job.auto_activate:
        current = reg.active(job.tenant)
        outcome.comparison = compare_on_holdout(result.scorer, _load(current, out), test)
        print(f"compare on the same holdout: {outcome.comparison.reason}", file=out)
        if outcome.comparison.activate:
            activate(reg, outcome.row.version, job.bootstrap, job.namespace, out)
            outcome.activated = True
    return outcome


def _load(row: ModelRow | None, out: TextIO) -> Scorer | None:
    if row is None:
        return None
    try:
        return Scorer.from_file(row.artifact_path, row.artifact_sha256)
    except ArtifactError as exc:  # unusable by this code: the candidate replaces it
        print(f"active model {row.version} cannot be evaluated ({exc})", file=out)
        return None


def report(r: TrainResult) -> str:
    m = r.metrics
    neg = r.train_size - r.train_positives
    ratio = neg / max(r.train_positives, 1)
    lines = [f"train {r.train_size:,} rows ({r.train_positives:,} fraud, imbalance 1:{ratio:.1f}), "
             f"holdout {r.test_size:,} rows ({m.positives:,} fraud, imbalance 1:{m.imbalance_ratio:.1f}); "
             "imbalance = legitimate per fraud, offset by weighting the fraud rows"]
    if r.late_evidence_excluded:
        lines.append(f"  {r.late_evidence_excluded:,} fraud check-ins whose evidence comes later in the shift "
                     f"({', '.join(sorted(LATE_EVIDENCE_SCENARIOS))}) not fitted on; they stay in the holdout")
    for name, c in r.candidates.items():
        lines.append(f"  {name:9} PR-AUC {c.pr_auc:.4f}  precision@80%recall {c.precision_at_80_recall:.4f}  "
                     f"ROC-AUC {c.roc_auc:.4f}")
    lines.append(f"kept {r.artifact.algorithm}: {r.artifact.version}")
    if r.artifact.calibration is not None:
        lines.append(f"calibrated (isotonic) on the holdout; reliability, each half of the holdout calibrated by the "
                     f"other half's map:\n{format_reliability(r.reliability)}")
        lines.append(f"ticket threshold {TICKET_THRESHOLD:.2f}: expected precision {r.ticket_precision:.3f}, "
                     f"recall {r.ticket_recall:.3f} (holdout, cross-fitted)")
    else:
        lines.append("not calibrated: too few frauds in the holdout")
    return "\n".join(lines)


def shifted_report(r: TrainResult, days: float, progress: ProgressFn) -> str:
    """The model scored on the held-out shifted simulator variations (``models.shifted``), worst set first."""
    from models.shifted import format_reports, score_sets, shifted_specs, simulate_set, worst

    reports = score_sets(r.scorer.predict_proba, [simulate_set(s, days, progress) for s in shifted_specs()])
    w = worst(reports)
    return (f"under distribution shift ({days:g} simulated days per held-out variation):\n{format_reports(reports)}\n"
            f"worst: PR-AUC {w['pr_auc'][0]:.3f} ({w['pr_auc'][1]}), precision@80%recall "
            f"{w['precision_at_80_recall'][0]:.3f}, scenario recall@0.80 {w['scenario_recall_at_ticket'][0]:.2f} "
            f"({w['scenario_recall_at_ticket'][1]}), look-alike FP/1k {w['lookalike_fp_per_1000'][0]:.1f} "
            f"({w['lookalike_fp_per_1000'][1]})")


def activate(reg: Registry, version: str, bootstrap: str, namespace: str, out: TextIO,
             action: str = "ACTIVATED") -> ModelRow:
    row = reg.activate(version, action)
    _announce(row, action, bootstrap, namespace, out)
    return row


def rollback(reg: Registry, tenant: int | None, bootstrap: str, namespace: str, out: TextIO) -> ModelRow:
    row = reg.rollback(tenant)
    _announce(row, "ROLLED_BACK", bootstrap, namespace, out)
    return row


def _announce(row: ModelRow, action: str, bootstrap: str, namespace: str, out: TextIO) -> None:
    event = model_event_record(row, action, int(time.time() * 1000))
    publish_model_event(bootstrap, namespace, event)
    scope = "global" if row.tenant_id is None else f"tenant {row.tenant_id}"
    print(f"{action.lower().replace('_', ' ')} {row.version} for {scope}; model_event published", file=out)
