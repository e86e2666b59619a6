"""Training as pure functions: history records in, a verified artifact and its holdout metrics out.

Labels: ``label`` records (a human source beats the simulator) and helpdesk ticket resolutions
FRAUD_CONFIRMED / FALSE_POSITIVE whose ``related_event_id`` names the attendance event or its fraud score.
Features come from :class:`models.features.HistoryFeaturizer` — the serving functions themselves.
The split is by event time (the newest ``test_size`` share is the holdout), never random.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from models.artifact import Artifact
from models.calibration import Bin, at_threshold, cross_fitted, fit_isotonic, reliability
from models.features import FEATURE_HASH, FEATURE_NAMES, INDEX, N_FEATURES, HistoryFeaturizer, _stem_record
from models.feedback import FEEDBACK, is_feedback
from models.metrics import Metrics, evaluate
from models.progress import ProgressFn, no_progress
from models.scoring import Scorer, compile_forest, event_id_of_score

LABEL_PRIORITY = {"SIMULATOR": 0, "TICKET_RESOLUTION": 1, "ANALYST": 2}
MIN_LABELLED = 200
MIN_POSITIVES_TRAIN = 20
MIN_POSITIVES_TEST = 5
MIN_NEGATIVES = 20
TICKET_THRESHOLD = 0.80  # a score at or above it opens a SECURITY_FRAUD ticket (streams.core.escalation)
# Fraud labelled on a check-in whose evidence only exists later in the shift: the simulator's older label
# modes (shift_labels check_in / check_in_and_out) file MISSED_TOUR on the shift's check-in, but the tours
# are missed afterwards, so the check-in itself looks like any other (the default "observable" mode labels
# the check-out instead and produces no such rows). Fitting such rows only teaches the model that ordinary
# check-ins are fraud; they are left out of the rows a booster is *fitted* on — never out of a holdout or
# any evaluation.
LATE_EVIDENCE_SCENARIOS = frozenset({"MISSED_TOUR"})


class TrainingDataError(ValueError):
    """Too little data to train or evaluate; the message says what is missing."""


@dataclass(slots=True)
class Dataset:
    X: npt.NDArray[np.float64]
    y: npt.NDArray[np.int8]
    times: npt.NDArray[np.int64]
    event_ids: list[str]
    scenarios: list[str]
    tenants: npt.NDArray[np.int64]
    unlabelled: int = 0  # attendance events without a label (not in X)

    def __len__(self) -> int:
        return int(self.y.size)

    @property
    def positives(self) -> int:
        return int(self.y.sum())

    def take(self, idx: npt.NDArray[np.intp]) -> Dataset:
        return Dataset(self.X[idx], self.y[idx], self.times[idx], [self.event_ids[i] for i in idx],
                       [self.scenarios[i] for i in idx], self.tenants[idx])


@dataclass(slots=True)
class _Label:
    is_fraud: bool
    scenario: str
    priority: int


def build_dataset(items: Iterable[Any], tenant: int | None = None, progress: ProgressFn = no_progress,
                  total: int | None = None, rows_from_ms: int | None = None) -> Dataset:
    """Featurize a time-ordered history and join the labels; only labelled attendance events become rows.

    ``items`` are ``(stem, record)`` pairs or simulator records, in event-time order, carrying reference,
    activity, attendance, label, ticket and (optionally) fraud_score records. ``tenant`` keeps one tenant
    (None keeps all, for a global model). Attendance before ``rows_from_ms`` only warms the state up (see
    :func:`rows_from`): it is featurized but never a row.
    """
    feat = HistoryFeaturizer()
    rows: list[list[float]] = []
    meta: list[tuple[str, int, int]] = []  # event_id, occurred_at, tenant
    labels: dict[str, _Label] = {}
    score_events: dict[str, str] = {}  # score_id -> event_id
    tickets: list[dict[str, Any]] = []
    for n, item in enumerate(items, 1):
        if n % 5000 == 0:
            progress("featurizing history", n, total)
        stem, rec = _stem_record(item)
        if tenant is not None and rec.get("tenant_id") != tenant:
            continue
        if stem == "label":
            _put_label(labels, rec["event_id"], bool(rec["is_fraud"]), rec.get("scenario") or "NONE",
                       LABEL_PRIORITY.get(rec.get("source", ""), 0))
        elif stem == "ticket":
            if is_feedback(rec):
                tickets.append(rec)
        elif stem == "fraud_score":
            score_events[rec["score_id"]] = rec["event_id"]
        else:
            vec = feat.feed(stem, rec)
            if vec is not None and (rows_from_ms is None or int(rec["occurred_at"]) >= rows_from_ms):
                rows.append(vec)
                meta.append((rec["event_id"], int(rec["occurred_at"]), int(rec["tenant_id"])))
    progress("featurizing history", total or 0, total or 0)
    known = {m[0] for m in meta}
    for t in tickets:
        rel = t["related_event_id"]
        ev = rel if rel in known else score_events.get(rel) or event_id_of_score(rel)
        if ev in known:
            fraud = FEEDBACK[t["resolution"]]
            _put_label(labels, ev, fraud, "UNKNOWN" if fraud else "NONE", LABEL_PRIORITY["TICKET_RESOLUTION"])
    keep = [i for i, m in enumerate(meta) if m[0] in labels]
    X = np.asarray([rows[i] for i in keep], dtype=np.float64).reshape(len(keep), N_FEATURES)
    y = np.asarray([labels[meta[i][0]].is_fraud for i in keep], dtype=np.int8)
    return Dataset(X, y, np.asarray([meta[i][1] for i in keep], dtype=np.int64), [meta[i][0] for i in keep],
                   [labels[meta[i][0]].scenario for i in keep], np.asarray([meta[i][2] for i in keep], dtype=np.int64),
                   unlabelled=len(meta) - len(keep))


WARM_UP_MS = 86_400_000  # state a punch's features read reaches back < 24 h (open check-ins: 20 h)
TRUNCATION_SLACK_MS = 3_600_000


def rows_from(starts: dict[str, int]) -> int | None:
    """First event time whose features are complete, when activity history starts after attendance history.

    Topics keep different retention (activity 30 days, attendance 90): a punch older than the oldest
    activity kept would be featurized without its activity — unlike any punch scored live — and teach the
    model that silent phones are normal. Such punches only warm the state up. ``starts`` are the
    :class:`models.history.ReplayStats` starts per topic.
    """
    act, att = starts.get("activity"), starts.get("attendance")
    if act is None or att is None or act <= att + TRUNCATION_SLACK_MS:
        return None
    return act + WARM_UP_MS


def _put_label(labels: dict[str, _Label], event_id: str, fraud: bool, scenario: str, priority: int) -> None:
    old = labels.get(event_id)
    if old is None or priority >= old.priority:  # a later label of the same rank replaces an earlier one
        if old is not None and old.is_fraud == fraud and scenario in ("UNKNOWN", "NONE"):
            scenario = old.scenario  # a confirmation keeps the more specific scenario
        labels[event_id] = _Label(fraud, scenario, priority)


def time_split(ds: Dataset, test_size: float) -> tuple[Dataset, Dataset]:
    """Oldest ``1 - test_size`` for training, newest ``test_size`` for the holdout."""
    if not 0.0 < test_size < 1.0:
        raise ValueError("test_size must be between 0 and 1")
    # (time, event id): the same events split the same way whatever order a replay delivered them in
    order = np.lexsort((np.asarray(ds.event_ids, dtype=object), ds.times))
    cut = round(len(ds) * (1.0 - test_size))
    return ds.take(order[:cut]), ds.take(order[cut:])


def check_data(train: Dataset, test: Dataset) -> None:
    """Refuse to train on too little data, saying what is missing."""
    total = len(train) + len(test)
    problems = []
    if total < MIN_LABELLED:
        problems.append(f"{total} labelled attendance events (need at least {MIN_LABELLED})")
    if train.positives < MIN_POSITIVES_TRAIN:
        problems.append(f"{train.positives} fraud labels in the training period (need {MIN_POSITIVES_TRAIN})")
    if test.positives < MIN_POSITIVES_TEST:
        problems.append(f"{test.positives} fraud labels in the holdout, the newest share (need {MIN_POSITIVES_TEST})")
    for name, part in (("training period", train), ("holdout", test)):
        if len(part) - part.positives < MIN_NEGATIVES:
            problems.append(f"{len(part) - part.positives} legitimate labels in the {name} (need {MIN_NEGATIVES})")
    if problems:
        raise TrainingDataError("not enough data to train: " + "; ".join(problems)
                                + ". Labels come from the labels topic and from tickets resolved FRAUD_CONFIRMED or "
                                  "FALSE_POSITIVE; widen --days or wait for more resolutions.")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    n_trees: int = 200
    max_depth: int = 6
    learning_rate: float = 0.1
    seed: int = 0
    threads: int = 2


@dataclass(slots=True)
class TrainResult:
    artifact: Artifact
    scorer: Scorer
    metrics: Metrics  # on the holdout
    train_size: int
    test_size: int
    train_positives: int
    candidates: dict[str, Metrics] = field(default_factory=dict)  # every algorithm tried (auto)
    late_evidence_excluded: int = 0  # training rows not fitted on (see LATE_EVIDENCE_SCENARIOS)
    # Calibration checked on the holdout, cross-fitted (each half calibrated by the other half's map):
    reliability: list[Bin] = field(default_factory=list)
    ticket_precision: float = float("nan")  # expected precision of the tickets (scores >= TICKET_THRESHOLD)
    ticket_recall: float = float("nan")

    def metrics_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = self.metrics.to_dict()
        d.update(train_size=self.train_size, test_size=self.test_size, train_positives=self.train_positives,
                 train_imbalance_ratio=(self.train_size - self.train_positives) / max(self.train_positives, 1),
                 late_evidence_excluded=self.late_evidence_excluded, ticket_threshold=TICKET_THRESHOLD,
                 ticket_precision=self.ticket_precision, ticket_recall=self.ticket_recall,
                 reliability=[[b.lo, b.hi, b.n, b.mean_predicted, b.observed] for b in self.reliability])
        if len(self.candidates) > 1:
            d["candidates"] = {k: m.to_dict() for k, m in self.candidates.items()}
        return d


_SHORT = {"xgboost": "xgb", "lightgbm": "lgb"}


def make_version(tenant: int | None, algorithm: str, trained_at: datetime) -> str:
    """E.g. ``t1-xgb-20260301-101500-123`` (no colon: score ids append the version after one)."""
    scope = "global" if tenant is None else f"t{tenant}"
    stamp = trained_at.astimezone(UTC).strftime("%Y%m%d-%H%M%S-") + f"{trained_at.microsecond // 1000:03d}"
    return f"{scope}-{_SHORT.get(algorithm, algorithm)}-{stamp}"


def _weight(train: Dataset) -> float:
    pos = train.positives
    return (len(train) - pos) / pos if pos else 1.0


def late_evidence_rows(ds: Dataset) -> npt.NDArray[np.bool_]:
    """Check-in rows labelled fraud with a scenario whose evidence only comes after the check-in."""
    check_in = ds.X[:, INDEX["is_check_in"]] == 1.0
    late = np.isin(np.asarray(ds.scenarios, dtype=object), sorted(LATE_EVIDENCE_SCENARIOS))
    result: npt.NDArray[np.bool_] = check_in & late & (ds.y == 1)
    return result


def fit_rows(train: Dataset) -> Dataset:
    """The training rows a booster learns from: all but :func:`late_evidence_rows`."""
    drop = late_evidence_rows(train)
    return train.take(np.flatnonzero(~drop)) if drop.any() else train


def fit(algorithm: str, train: Dataset, version: str, cfg: TrainConfig = TrainConfig(),
        progress: ProgressFn = no_progress) -> Artifact:
    """Train one booster with positives weighted by negatives/positives; return its calibrated artifact.

    Fits on :func:`fit_rows` of ``train`` (late-evidence check-ins left out).
    """
    train = fit_rows(train)
    if algorithm == "xgboost":
        booster = _fit_xgboost(train, _weight(train), cfg, progress)
    elif algorithm == "lightgbm":
        booster = _fit_lightgbm(train, cfg, progress)
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    raw = Artifact(version, algorithm, FEATURE_NAMES, FEATURE_HASH, 0.0, booster)
    margin, _ = compile_forest(raw).margin(train.X)
    return replace(raw, margin_offset=intercept_offset(margin, train.y))


def intercept_offset(margin: npt.NDArray[np.float64], y: npt.NDArray[np.int8]) -> float:
    """The shift of the log-odds that makes the mean predicted probability equal the fraud rate.

    Class weighting inflates every margin; the textbook correction ``-log(weight)`` over-corrects boosted
    trees (their regularised leaves never absorb the full weight), leaving confident frauds in MEDIUM.
    Matching the base rate on the training rows keeps the risk bands meaningful.
    """
    rate = float(np.mean(y)) if y.size else 0.0
    if rate <= 0.0 or rate >= 1.0:
        return 0.0
    lo, hi = -30.0, 30.0
    for _ in range(60):  # bisection: the mean probability grows with the offset
        mid = (lo + hi) / 2
        if float(np.mean(1.0 / (1.0 + np.exp(-(margin + mid))))) > rate:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def _fit_xgboost(train: Dataset, scale_pos_weight: float, cfg: TrainConfig, progress: ProgressFn) -> str:
    import xgboost as xgb

    class _Progress(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            progress("training xgboost", epoch + 1, cfg.n_trees)
            return False

    params = {"objective": "binary:logistic", "max_depth": cfg.max_depth, "eta": cfg.learning_rate,
              "tree_method": "hist", "scale_pos_weight": scale_pos_weight, "seed": cfg.seed,
              "nthread": cfg.threads, "eval_metric": "aucpr", "min_child_weight": 1.0}
    dtrain = xgb.DMatrix(train.X, label=train.y, feature_names=list(FEATURE_NAMES))
    booster = xgb.train(params, dtrain, num_boost_round=cfg.n_trees, callbacks=[_Progress()])
    return bytes(booster.save_raw("json")).decode()


def _fit_lightgbm(train: Dataset, cfg: TrainConfig, progress: ProgressFn) -> str:
    import lightgbm as lgb

    def _progress(env: Any) -> None:
        progress("training lightgbm", env.iteration + 1, cfg.n_trees)

    params = {"objective": "binary", "is_unbalance": True, "max_depth": cfg.max_depth,
              "num_leaves": 2 ** cfg.max_depth - 1, "learning_rate": cfg.learning_rate, "seed": cfg.seed,
              "deterministic": True, "num_threads": cfg.threads, "verbose": -1, "min_data_in_leaf": 10}
    ds = lgb.Dataset(train.X, label=train.y, feature_name=list(FEATURE_NAMES), free_raw_data=False)
    booster = lgb.train(params, ds, num_boost_round=cfg.n_trees, callbacks=[_progress])
    text: str = booster.model_to_string()
    return text


def offset_margin(art: Artifact, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The artifact's log-odds of rows ``X``, offset (what calibration maps to a probability)."""
    margin, _ = compile_forest(art).margin(X)
    out: npt.NDArray[np.float64] = margin + art.margin_offset
    return out


def calibrate(art: Artifact, holdout: Dataset) -> Artifact:
    """The artifact with an isotonic calibration fitted on ``holdout`` (unchanged when it has too few frauds)."""
    if holdout.positives < MIN_POSITIVES_TEST:
        return art
    return replace(art, calibration=fit_isotonic(offset_margin(art, holdout.X), holdout.y))


def train_model(train: Dataset, test: Dataset, algo: str, tenant: int | None, trained_at: datetime,
                cfg: TrainConfig = TrainConfig(), progress: ProgressFn = no_progress) -> TrainResult:
    """Fit ``xgboost``, ``lightgbm`` or both (``auto``, keeping the better holdout PR-AUC), each calibrated on
    the holdout."""
    check_data(train, test)
    algos = ("xgboost", "lightgbm") if algo == "auto" else (algo,)
    best: tuple[Artifact, Scorer, Metrics] | None = None
    tried: dict[str, Metrics] = {}
    for name in algos:
        art = calibrate(fit(name, train, make_version(tenant, name, trained_at), cfg, progress), test)
        scorer = Scorer(art)
        m = evaluate(test.y, scorer.predict_proba(test.X))
        tried[name] = m
        if best is None or _better(m.pr_auc, best[2].pr_auc):
            best = (art, scorer, m)
    assert best is not None
    honest = cross_fitted(offset_margin(best[0], test.X), test.y)
    precision, recall = at_threshold(test.y, honest, TICKET_THRESHOLD)
    return TrainResult(best[0], best[1], best[2], len(train), len(test), train.positives, tried,
                       int(late_evidence_rows(train).sum()), reliability(test.y, honest), precision, recall)


def _better(a: float, b: float) -> bool:
    return not math.isnan(a) and (math.isnan(b) or a > b)


@dataclass(frozen=True, slots=True)
class Comparison:
    activate: bool
    candidate_pr_auc: float
    active_pr_auc: float | None
    reason: str


def compare_on_holdout(candidate: Scorer, active: Scorer | None, holdout: Dataset, min_gain: float = 0.0) -> Comparison:
    """Should the candidate replace the active model? Both are scored on the *same* holdout rows."""
    cand = evaluate(holdout.y, candidate.predict_proba(holdout.X)).pr_auc
    if active is None:
        return Comparison(True, cand, None, "no active model")
    act = evaluate(holdout.y, active.predict_proba(holdout.X)).pr_auc
    if _better(cand, act + min_gain if not math.isnan(act) else act):
        return Comparison(True, cand, act, f"PR-AUC {cand:.4f} beats the active {act:.4f}")
    return Comparison(False, cand, act, f"PR-AUC {cand:.4f} does not beat the active {act:.4f}")
