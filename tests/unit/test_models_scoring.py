"""Scoring: risk bands, compiled-forest parity with the libraries, reasons, rules, the model cache."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

from models.artifact import Artifact, write_artifact
from models.compiled import compile_lightgbm, compile_xgboost
from models.features import FEATURE_HASH, FEATURE_NAMES, INDEX, N_FEATURES
from models.scoring import (
    RULES_VERSION,
    ModelCache,
    ModelLoadError,
    RuleScorer,
    Scorer,
    event_id_of_score,
    fraud_score_record,
    risk_level,
)
from models.train import Dataset, fit
from schemas.serde import store


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature-shaped random data where mock location, distance and a low face match mean fraud."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[rng.random(X.shape) < 0.15] = np.nan
    X[:, INDEX["is_mock_location"]] = (rng.random(n) < 0.05).astype(float)
    X[:, INDEX["device_registered"]] = np.where(rng.random(n) < 0.1, np.nan, np.round(rng.random(n)))
    logit = (3 * X[:, INDEX["is_mock_location"]] + np.nan_to_num(X[:, INDEX["geofence_distance_m"]])
             - 2 * np.nan_to_num(X[:, INDEX["face_match_score"]]) - 3 + rng.normal(size=n) * 0.3)
    return X, (logit > 0).astype(np.int8)


def dataset(n: int = 3000, seed: int = 0) -> Dataset:
    X, y = synthetic(n, seed)
    return Dataset(X, y, np.arange(n, dtype=np.int64), [f"e{i}" for i in range(n)], ["NONE"] * n,
                   np.ones(n, dtype=np.int64))


@pytest.fixture(scope="module")
def artifacts() -> dict[str, Artifact]:
    from models.train import TrainConfig

    ds = dataset()
    cfg = TrainConfig(n_trees=60, max_depth=5)
    return {a: fit(a, ds, f"t1-{a[:3]}-test", cfg) for a in ("xgboost", "lightgbm")}


@pytest.mark.parametrize(("p", "band"), [(0.0, "LOW"), (0.2999, "LOW"), (0.30, "MEDIUM"), (0.5999, "MEDIUM"),
                                         (0.60, "HIGH"), (0.7999, "HIGH"), (0.80, "CRITICAL"), (1.0, "CRITICAL")])
def test_risk_bands(p: float, band: str) -> None:
    assert risk_level(p) == band


def test_compiled_xgboost_matches_the_library(artifacts: dict[str, Artifact]) -> None:
    art = artifacts["xgboost"]
    booster = xgb.Booster()
    booster.load_model(bytearray(art.booster.encode()))
    forest = compile_xgboost(art.booster, N_FEATURES)
    X, _ = synthetic(500, 7)
    X[0, :] = np.nan
    X[1, 3] = 1e30
    margin, contrib = forest.margin(X, contributions=True)
    assert contrib is not None
    dm = xgb.DMatrix(X, feature_names=list(FEATURE_NAMES))
    np.testing.assert_allclose(margin, booster.predict(dm, output_margin=True), atol=1e-4)
    # the contributions are xgboost's own approximate (Saabas) ones, and add up to the margin
    np.testing.assert_allclose(contrib, booster.predict(dm, pred_contribs=True, approx_contribs=True), atol=1e-4)
    np.testing.assert_allclose(contrib.sum(axis=1), margin, atol=1e-9)


def test_compiled_lightgbm_matches_the_library(artifacts: dict[str, Artifact]) -> None:
    booster = lgb.Booster(model_str=artifacts["lightgbm"].booster)
    forest = compile_lightgbm(booster.dump_model(), N_FEATURES)
    X, _ = synthetic(500, 8)
    X[:, 5] = np.where(np.arange(500) % 3 == 0, 0.0, X[:, 5])  # zeros take LightGBM's zero path
    margin, contrib = forest.margin(X, contributions=True)
    assert contrib is not None
    np.testing.assert_allclose(margin, booster.predict(X, raw_score=True), atol=1e-9)
    np.testing.assert_allclose(contrib.sum(axis=1), margin, atol=1e-9)


@pytest.mark.parametrize("algo", ["xgboost", "lightgbm"])
def test_scorer_probabilities_and_reasons(artifacts: dict[str, Artifact], algo: str) -> None:
    scorer = Scorer(artifacts[algo])
    X, y = synthetic(400, 9)
    results = scorer.score_many(X.tolist())
    probs = np.array([r.fraud_probability for r in results])
    np.testing.assert_allclose(probs, scorer.predict_proba(X), rtol=1e-12)
    assert probs[y == 1].mean() > 0.6 > 0.2 > probs[y == 0].mean()
    for r, vec in zip(results, X, strict=True):
        assert r.risk_level == risk_level(r.fraud_probability) and r.model_version == scorer.model_version
        assert len(r.reasons) <= 3
        contribs = [x["contribution"] for x in r.reasons]
        assert contribs == sorted(contribs, reverse=True) and all(c > 0 for c in contribs)
        for reason in r.reasons:
            v = vec[INDEX[reason["feature"]]]
            assert (math.isnan(v) and math.isnan(reason["value"])) or v == reason["value"]
            assert reason["description"]
    mocked = [r for r, vec in zip(results, X, strict=True) if vec[INDEX["is_mock_location"]] == 1.0
              and r.risk_level in ("HIGH", "CRITICAL")]
    assert mocked and all(any(x["feature"] == "is_mock_location" for x in r.reasons) for r in mocked)
    assert scorer.score_many([]) == []


def test_calibration_offset_undoes_class_weighting(artifacts: dict[str, Artifact]) -> None:
    ds = dataset(3000, 11)
    p = Scorer(artifacts["xgboost"]).predict_proba(ds.X)
    assert abs(p.mean() - ds.y.mean()) < 0.03  # weighted training alone would inflate this several-fold


def test_scorer_refuses_another_feature_list(artifacts: dict[str, Artifact]) -> None:
    bad = replace(artifacts["xgboost"], feature_hash="0" * 64)
    with pytest.raises(ValueError, match="another feature list"):
        Scorer(bad)


def _vec(**kw: float) -> list[float]:
    v = [float("nan")] * N_FEATURES
    v[INDEX["is_check_in"]] = 1.0
    for k, x in kw.items():
        v[INDEX[k]] = x
    return v


def test_rule_scorer() -> None:
    rules = RuleScorer()
    quiet = rules.score(_vec(is_mock_location=0.0, face_match_score=0.95))
    assert quiet.risk_level == "LOW" and quiet.reasons == [] and quiet.model_version == RULES_VERSION
    one = rules.score(_vec(is_mock_location=1.0))
    assert one.risk_level == "MEDIUM" and one.fraud_probability == pytest.approx(0.5)
    many = rules.score(_vec(is_mock_location=1.0, speed_kmh_since_last_fix=900.0, face_match_score=0.2,
                            minutes_from_shift_start=45.0))
    assert many.risk_level == "CRITICAL"
    assert [r["feature"] for r in many.reasons] == ["is_mock_location", "speed_kmh_since_last_fix", "face_match_score"]
    assert many.reasons[0]["contribution"] == 3.0
    late_out = _vec(minutes_from_shift_start=45.0)
    late_out[INDEX["is_check_in"]] = 0.0
    assert rules.score(late_out).reasons == []  # lateness is a check-in rule
    assert len(rules.score_many([quiet_vec := _vec(), quiet_vec])) == 2


def _event(art: Artifact, path: Path, sha: str, tenant: int | None, at: int = 1, **kw: Any) -> dict[str, Any]:
    ev = {"tenant_id": tenant, "action": "ACTIVATED", "model_version": art.version, "algorithm": art.algorithm,
          "artifact_path": str(path), "artifact_sha256": sha, "feature_hash": FEATURE_HASH, "occurred_at": at}
    ev.update(kw)
    return ev


def test_model_cache_fallbacks_and_hot_reload(artifacts: dict[str, Artifact], tmp_path: Path) -> None:
    cache = ModelCache()
    assert cache.scorer_for(1).model_version == RULES_VERSION
    g_art = replace(artifacts["lightgbm"], version="global-lgb-1")
    t_art = artifacts["xgboost"]
    g_path, g_sha = write_artifact(g_art, tmp_path)
    t_path, t_sha = write_artifact(t_art, tmp_path)
    assert cache.apply(_event(g_art, g_path, g_sha, None, at=10))
    assert cache.scorer_for(1).model_version == "global-lgb-1"
    assert cache.apply(_event(t_art, t_path, t_sha, 1, at=11))
    assert cache.scorer_for(1).model_version == t_art.version
    assert cache.scorer_for(2).model_version == "global-lgb-1"
    assert not cache.apply(_event(t_art, t_path, t_sha, 1, at=12))  # same model again: no reload
    # a tampered artifact or a foreign feature list is refused and the current model stays
    with pytest.raises(ModelLoadError, match="sha256"):
        cache.apply(_event(g_art, g_path, "f" * 64, 1, at=13))
    with pytest.raises(ModelLoadError, match="features"):
        cache.apply(_event(g_art, g_path, g_sha, 1, at=13, feature_hash="0" * 64))
    with pytest.raises(ModelLoadError):
        cache.apply(_event(g_art, tmp_path / "missing.json", g_sha, 1, at=13))
    assert cache.scorer_for(1).model_version == t_art.version
    assert not cache.apply(_event(g_art, g_path, g_sha, 1, at=5))  # older than what was applied: ignored
    assert cache.apply(_event(t_art, t_path, t_sha, 1, at=14, action="DEACTIVATED"))
    assert cache.scorer_for(1).model_version == "global-lgb-1"
    assert cache.versions() == {None: "global-lgb-1"}


def test_fraud_score_record_is_a_valid_contract_record(artifacts: dict[str, Artifact]) -> None:
    scorer = Scorer(artifacts["xgboost"])
    att = {"event_id": "att-1", "tenant_id": 1, "site_id": "s-1", "person_id": "p-1", "occurred_at": 5,
           "received_at": 6, "event_type": "CHECK_IN", "shift_id": None, "lat": 0.0, "lon": 0.0, "accuracy_m": 5.0,
           "device_id": "d-1", "is_mock_location": True, "face_match_score": None}
    vec = _vec(is_mock_location=1.0, face_match_score=0.1, geofence_distance_m=3.0)
    for result in (scorer.score(vec), RuleScorer().score(vec)):
        rec = fraud_score_record(att, vec, result)
        stem, back = store().decode(store().encode("fraud_score", rec))
        assert stem == "fraud_score" and back["score_id"] == f"att-1:{result.model_version}"
        assert back["feature_names"] == list(FEATURE_NAMES) and len(back["features"]) == N_FEATURES
        assert back["risk_level"] == result.risk_level and back["reasons"][0]["feature"] == "is_mock_location"
        assert event_id_of_score(back["score_id"]) == "att-1"
        assert fraud_score_record(att, vec, result)["score_id"] == rec["score_id"]  # stable


def test_score_records_uses_each_tenants_scorer_in_input_order(artifacts: dict[str, Artifact], tmp_path: Path) -> None:
    from models.scoring import score_records

    cache = ModelCache()
    path, sha = write_artifact(artifacts["xgboost"], tmp_path)
    cache.apply(_event(artifacts["xgboost"], path, sha, 1))
    base = {"received_at": 0, "event_type": "CHECK_IN", "shift_id": None, "lat": 0.0, "lon": 0.0, "accuracy_m": 5.0,
            "device_id": "d", "is_mock_location": False, "face_match_score": None, "site_id": "s", "person_id": "p",
            "occurred_at": 1}
    batch = [(dict(base, event_id=f"e{i}", tenant_id=1 + i % 2), _vec(is_mock_location=1.0)) for i in range(5)]
    recs = score_records(cache, batch)
    assert [r["event_id"] for r in recs] == [f"e{i}" for i in range(5)]
    assert [r["model_version"] for r in recs] == [artifacts["xgboost"].version if i % 2 == 0 else RULES_VERSION
                                                  for i in range(5)]


def test_worker_hot_reload_from_model_event_bytes(artifacts: dict[str, Artifact], tmp_path: Path) -> None:
    """What a running worker does with each model-events record: swap the scorer, never crash."""
    from models.reload import on_model_event, warm_up

    cache = ModelCache()
    x_art, l_art = artifacts["xgboost"], replace(artifacts["lightgbm"], version="t1-lgb-2")
    x_path, x_sha = write_artifact(x_art, tmp_path)
    l_path, l_sha = write_artifact(l_art, tmp_path)
    enc = store().encode
    # start-up: replay of the compacted topic (a tombstone and the tenant's two activations)
    outs = warm_up(cache, [None, enc("model_event", _event(x_art, x_path, x_sha, 1, at=1))])
    assert [o.changed for o in outs] == [False, True] and all(o.ok for o in outs)
    vec = _vec(is_mock_location=1.0)
    before = cache.scorer_for(1).score(vec)
    assert before.model_version == x_art.version
    # live: an activation swaps the scorer for the next event, without a restart
    out = on_model_event(cache, enc("model_event", _event(l_art, l_path, l_sha, 1, at=2)))
    assert out.changed and out.ok and out.tenant_id == 1 and out.model_version == "t1-lgb-2"
    after = cache.scorer_for(1).score(vec)
    assert after.model_version == "t1-lgb-2" and after.fraud_probability != before.fraud_probability
    # garbage and an unusable model are reported, not raised, and the current model stays
    bad = on_model_event(cache, b"\x00garbage")
    assert not bad.ok and bad.reason in ("MALFORMED", "UNKNOWN_SCHEMA") and not bad.changed
    wrong = on_model_event(cache, enc("model_event", _event(x_art, x_path, "0" * 64, 1, at=3)))
    assert not wrong.ok and "sha256" in (wrong.error or "")
    odd = on_model_event(cache, {"tenant_id": 1, "occurred_at": 4})  # decoded but missing fields
    assert not odd.ok and "invalid model event" in (odd.error or "")
    assert cache.scorer_for(1).model_version == "t1-lgb-2"
    # a global model serves the other tenants; rolling tenant 1 back is one more event
    assert on_model_event(cache, _event(x_art, x_path, x_sha, None, at=5)).changed
    assert cache.scorer_for(7).model_version == x_art.version
    rb = on_model_event(cache, enc("model_event", _event(x_art, x_path, x_sha, 1, at=6, action="ROLLED_BACK")))
    assert rb.changed and cache.scorer_for(1).model_version == x_art.version
