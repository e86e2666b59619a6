"""Inline fraud scoring: model scorer, rule-based fallback, per-tenant model cache, fraud_score records.

Sans-I/O apart from reading an artifact file when a model is (re)loaded. Risk bands (also in the
fraud_score contract): LOW < 0.30 <= MEDIUM < 0.60 <= HIGH < 0.80 <= CRITICAL.

Reasons are per-feature contributions in log-odds: the top three of at least 0.05 among the features whose
value is known, largest first, each described in words by :mod:`models.reasons`. A model
computes them for *every* event with the compiled forest (:mod:`models.compiled`, Saabas path
attribution — xgboost's ``approx_contribs``), which costs a few microseconds per event in a micro-batch;
exact TreeSHAP (``pred_contribs``) costs about a millisecond per row and is not used inline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from models.artifact import Artifact, ArtifactError, read_artifact
from models.compiled import CompiledForest, compile_lightgbm, compile_xgboost
from models.features import FEATURE_HASH, FEATURE_NAMES, INDEX, N_FEATURES, Record
from models.reasons import describe

RULES_VERSION = "rules-v1"
BANDS: tuple[tuple[float, str], ...] = ((0.80, "CRITICAL"), (0.60, "HIGH"), (0.30, "MEDIUM"))
TOP_REASONS = 3
MIN_REASON_LOGODDS = 0.05  # smaller pushes are noise, not reasons


def risk_level(p: float) -> str:
    """LOW < 0.30 <= MEDIUM < 0.60 <= HIGH < 0.80 <= CRITICAL."""
    for floor, name in BANDS:
        if p >= floor:
            return name
    return "LOW"


@dataclass(frozen=True, slots=True)
class ScoreResult:
    fraud_probability: float
    risk_level: str
    model_version: str
    reasons: list[dict[str, Any]] = field(default_factory=list)  # fraud_score ScoreReason records


class ScorerLike(Protocol):
    model_version: str

    def score_many(self, vectors: Sequence[Sequence[float]]) -> list[ScoreResult]: ...


def _reason(i: int, vector: Sequence[float], contribution: float) -> dict[str, Any]:
    name = FEATURE_NAMES[i]
    return {"feature": name, "value": float(vector[i]), "contribution": contribution,
            "description": describe(name, vector)}


class Scorer:
    """A trained model, compiled for batched inference with per-event reasons."""

    def __init__(self, artifact: Artifact, sha256: str = "") -> None:
        if artifact.feature_hash != FEATURE_HASH or tuple(artifact.feature_names) != FEATURE_NAMES:
            raise ArtifactError(f"model {artifact.version} was trained on another feature list "
                                f"({artifact.feature_hash[:12]}…, this code has {FEATURE_HASH[:12]}…)")
        self.artifact = artifact
        self.model_version = artifact.version
        self.algorithm = artifact.algorithm
        self.sha256 = sha256
        self.forest: CompiledForest = compile_forest(artifact)
        self.margin_offset = artifact.margin_offset
        cal = artifact.calibration
        self._cal: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None = None if cal is None else (
            np.asarray(cal["x"], dtype=np.float64), np.asarray(cal["y"], dtype=np.float64))

    def _proba(self, margin: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Offset log-odds to probability: the calibration map when the artifact has one, else the sigmoid."""
        z = margin + self.margin_offset
        if self._cal is None:
            return self.forest.proba(z)
        return np.interp(z, self._cal[0], self._cal[1])

    @classmethod
    def from_file(cls, path: Path | str, expected_sha256: str | None = None) -> Scorer:
        art, sha = read_artifact(path, expected_sha256)
        return cls(art, sha)

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Probabilities only (evaluation, comparisons): no reasons."""
        margin, _ = self.forest.margin(X)
        return self._proba(margin)

    def score_many(self, vectors: Sequence[Sequence[float]]) -> list[ScoreResult]:
        if len(vectors) == 0:
            return []
        X = np.asarray(vectors, dtype=np.float64)
        margin, contrib = self.forest.margin(X, contributions=True)
        assert contrib is not None
        probs = self._proba(margin).tolist()
        # An unknown value (NaN) is no evidence to name: such features never rank as reasons.
        c = np.where(np.isnan(X), -np.inf, contrib[:, :N_FEATURES])
        # Top three per row in one vectorised sort; ties go to the lower feature index (stable sort).
        top = np.argsort(-c, axis=1, kind="stable")[:, :TOP_REASONS]
        top_c = np.take_along_axis(c, top, axis=1)
        out = []
        for p, idx, cs, vec in zip(probs, top.tolist(), top_c.tolist(), vectors, strict=True):
            reasons = [_reason(i, vec, ci) for i, ci in zip(idx, cs, strict=True) if ci >= MIN_REASON_LOGODDS]
            out.append(ScoreResult(p, risk_level(p), self.model_version, reasons))
        return out

    def score(self, vector: Sequence[float]) -> ScoreResult:
        return self.score_many([vector])[0]


def compile_forest(artifact: Artifact) -> CompiledForest:
    if artifact.algorithm == "xgboost":
        return compile_xgboost(artifact.booster, N_FEATURES)
    import lightgbm as lgb  # only to parse the model text into its JSON dump

    booster = lgb.Booster(model_str=artifact.booster)
    return compile_lightgbm(booster.dump_model(), N_FEATURES)


# -- rules -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    feature: str
    op: str  # ">=", "<=" or "=="
    threshold: float
    weight: float  # log-odds added when the rule fires

    def fires(self, v: float) -> bool:
        if math.isnan(v):
            return False
        if self.op == ">=":
            return v >= self.threshold
        if self.op == "<=":
            return v <= self.threshold
        return v == self.threshold


# The fallback when no model is active: log-odds = RULES_BIAS + the weights of the rules that fire,
# p = sigmoid(log-odds). Nothing firing gives 0.05 (LOW); one strong signal (weight 3) gives 0.50
# (MEDIUM); two strong signals reach CRITICAL. Reasons are the fired rules, heaviest first.
RULES_BIAS = -3.0
RULES: tuple[Rule, ...] = (
    Rule("is_mock_location", "==", 1.0, 3.0),  # GPS spoofing flagged by the OS
    Rule("speed_kmh_since_last_fix", ">=", 250.0, 3.0),  # impossible travel
    Rule("geofence_excess_over_accuracy_m", ">=", 150.0, 2.0),  # off the geofence, beyond GPS error
    Rule("device_other_people_24h", ">=", 1.0, 2.0),  # buddy punching on one phone
    Rule("face_match_score", "<=", 0.5, 2.0),  # selfie does not match
    Rule("shift_unknown", "==", 1.0, 2.0),  # ghost shift
    Rule("shift_other_person", "==", 1.0, 2.0),
    Rule("tour_completion_ratio", "<=", 0.5, 1.5),  # missed tours
    Rule("device_registered", "==", 0.0, 1.0),
    Rule("mock_fixes_2h", ">=", 1.0, 1.0),
    Rule("minutes_from_shift_start", ">=", 30.0, 1.0),  # late arrival (check-ins only, below)
    Rule("punch_sequence_error", "==", 1.0, 0.5),
)


class RuleScorer:
    """Documented rule-based fallback (model_version ``rules-v1``); reasons are the fired rules' weights."""

    model_version = RULES_VERSION

    def __init__(self, rules: Sequence[Rule] = RULES, bias: float = RULES_BIAS) -> None:
        self.rules = tuple(rules)
        self.bias = bias
        self._index = [INDEX[r.feature] for r in self.rules]

    def score_many(self, vectors: Sequence[Sequence[float]]) -> list[ScoreResult]:
        return [self.score(v) for v in vectors]

    def score(self, vector: Sequence[float]) -> ScoreResult:
        check_in = vector[INDEX["is_check_in"]] == 1.0
        fired: list[tuple[float, int, Rule]] = []
        for i, (rule, fi) in enumerate(zip(self.rules, self._index, strict=True)):
            if rule.feature == "minutes_from_shift_start" and not check_in:
                continue
            if rule.fires(float(vector[fi])):
                fired.append((rule.weight, i, rule))
        logit = self.bias + sum(w for w, _, _ in fired)
        p = 1.0 / (1.0 + math.exp(-logit))
        fired.sort(key=lambda t: (-t[0], t[1]))
        reasons = [_reason(INDEX[r.feature], vector, r.weight)
                   for _, _, r in fired[:TOP_REASONS]]
        return ScoreResult(p, risk_level(p), RULES_VERSION, reasons)


# -- the per-tenant cache of active models -------------------------------------------------------


class ModelLoadError(ValueError):
    """A model event that could not be applied; the previous model stays in use."""


class ModelCache:
    """Active scorer per tenant (None = the global model), hot-reloaded from model_event records.

    ``scorer_for(tenant)``: the tenant's model, else the global model, else the rules.
    """

    def __init__(self, rules: RuleScorer | None = None) -> None:
        self.rules = rules or RuleScorer()
        self._models: dict[int | None, Scorer] = {}
        self._applied_at: dict[int | None, int] = {}

    def scorer_for(self, tenant_id: int | None) -> Scorer | RuleScorer:
        return self._models.get(tenant_id) or self._models.get(None) or self.rules

    def versions(self) -> dict[int | None, str]:
        return {t: s.model_version for t, s in self._models.items()}

    def apply(self, event: Record) -> bool:
        """Apply one model_event; return True when the active scorer changed.

        Checks the feature hash and the artifact's sha256 before swapping; raises :class:`ModelLoadError`
        (keeping the current model) when either does not match or the file is unreadable. Events older
        than the last one applied for the tenant are ignored (a replayed compacted topic).
        """
        tenant = event.get("tenant_id")
        at = int(event.get("occurred_at", 0))
        if at < self._applied_at.get(tenant, -1):
            return False
        if event["action"] == "DEACTIVATED":
            self._applied_at[tenant] = at
            return self._models.pop(tenant, None) is not None
        current = self._models.get(tenant)
        if current is not None and current.model_version == event["model_version"] \
                and current.sha256 == event["artifact_sha256"]:
            self._applied_at[tenant] = at
            return False
        if event["feature_hash"] != FEATURE_HASH:
            raise ModelLoadError(f"model {event['model_version']} expects features {event['feature_hash'][:12]}…, "
                                 f"this worker computes {FEATURE_HASH[:12]}…")
        try:
            scorer = Scorer.from_file(event["artifact_path"], event["artifact_sha256"])
        except (ArtifactError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"model {event['model_version']}: {exc}") from exc
        if scorer.model_version != event["model_version"]:
            raise ModelLoadError(f"artifact holds {scorer.model_version}, event names {event['model_version']}")
        self._models[tenant] = scorer
        self._applied_at[tenant] = at
        return True


# -- the prediction log record -------------------------------------------------------------------


def score_id(event_id: str, model_version: str) -> str:
    """Stable id of a prediction: redelivery or rescoring with the same model gives the same id."""
    return f"{event_id}:{model_version}"


def event_id_of_score(sid: str) -> str:
    """The attendance event id inside a :func:`score_id` (model versions contain no colon)."""
    return sid.rpartition(":")[0]


def score_records(cache: ModelCache, batch: Sequence[tuple[Record, Sequence[float]]]) -> list[dict[str, Any]]:
    """Score a micro-batch of ``(attendance record, vector)`` with each tenant's scorer, in input order."""
    by_tenant: dict[int, list[int]] = {}
    for i, (att, _) in enumerate(batch):
        by_tenant.setdefault(int(att["tenant_id"]), []).append(i)
    out: list[dict[str, Any] | None] = [None] * len(batch)
    for tenant, idx in by_tenant.items():
        results = cache.scorer_for(tenant).score_many([batch[i][1] for i in idx])
        for i, res in zip(idx, results, strict=True):
            out[i] = fraud_score_record(batch[i][0], batch[i][1], res)
    return [r for r in out if r is not None]


def fraud_score_record(att: Record, vector: Sequence[float], result: ScoreResult) -> dict[str, Any]:
    """A valid fraud_score record for one scored attendance event."""
    return {
        "score_id": score_id(att["event_id"], result.model_version),
        "event_id": att["event_id"],
        "tenant_id": int(att["tenant_id"]),
        "site_id": att["site_id"],
        "person_id": att["person_id"],
        "device_id": att["device_id"],
        "shift_id": att.get("shift_id"),
        "event_type": att["event_type"],
        "occurred_at": int(att["occurred_at"]),
        "fraud_probability": float(result.fraud_probability),
        "risk_level": result.risk_level,
        "model_version": result.model_version,
        "reasons": [dict(r) for r in result.reasons],
        "feature_names": list(FEATURE_NAMES),
        "features": [float(x) for x in vector],
    }

