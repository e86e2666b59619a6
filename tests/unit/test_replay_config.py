"""--set overrides on the pipeline configuration."""

from __future__ import annotations

import pytest

from streams.core.pipeline import PipelineConfig
from streams.replay_config import OverrideError, ReplayConfig, apply_overrides, as_dict, parse_assignment


def test_defaults_are_the_live_configuration() -> None:
    cfg = apply_overrides([])
    assert cfg.is_live and cfg.pipeline == PipelineConfig()
    assert cfg.describe() == "live configuration"


def test_aliases_durations_and_types() -> None:
    cfg = apply_overrides(["fraud.threshold=0.9", "correlation.window=30m", "correlation.min_records=2",
                           "pipeline.grace=5m"])
    assert cfg.pipeline.escalation.fraud_threshold == 0.9
    assert cfg.fraud_threshold == 0.9
    assert cfg.pipeline.correlation.window_ms == 30 * 60_000
    assert cfg.pipeline.correlation.min_records == 2
    assert cfg.pipeline.grace_ms == 5 * 60_000
    assert not cfg.is_live
    assert "fraud.threshold=0.9" in cfg.describe()
    assert as_dict(cfg)["pipeline"]["correlation"]["window_ms"] == 30 * 60_000


def test_model_version_and_later_overrides_win() -> None:
    cfg = apply_overrides(["correlation.window_ms=60000", "correlation.window=2m"], model_version="xgb-3")
    assert cfg.pipeline.correlation.window_ms == 120_000
    assert cfg.model_version == "xgb-3" and not cfg.is_live
    again = apply_overrides(["escalation.reemit_on_redelivery=true"], base=cfg)
    assert again.pipeline.escalation.reemit_on_redelivery is True
    assert again.model_version == "xgb-3" and len(again.overrides) == 3


@pytest.mark.parametrize("text, match", [
    ("nosuch.thing=1", "unknown setting"),
    ("correlation.nosuch=1", "unknown setting"),
    ("correlation.window=soon", "not a duration"),
    ("fraud.threshold=high", "could not convert"),
    ("correlation.min_records=0", "min_records"),
    ("escalation.reemit_on_redelivery=maybe", "not a boolean"),
    ("fraud.threshold", "expected key=value"),
])
def test_bad_overrides_are_refused_clearly(text: str, match: str) -> None:
    with pytest.raises(OverrideError, match=match):
        apply_overrides([text])


def test_parse_assignment_strips() -> None:
    assert parse_assignment(" a.b = 3 ") == ("a.b", "3")
    assert ReplayConfig().fraud_threshold == PipelineConfig().escalation.fraud_threshold


def test_anomaly_threshold_and_baselines_settings_reach_the_site_stage() -> None:
    cfg = apply_overrides(["anomaly.threshold=4.5", "baselines.min_samples=4", "baselines.retune_interval=1d"])
    assert cfg.sites.baselines.default_threshold == 4.5
    assert cfg.sites.baselines.min_samples == 4
    assert cfg.sites.baselines.retune_interval_ms == 86_400_000
    assert cfg.pipeline == PipelineConfig() and not cfg.is_live
    assert as_dict(cfg)["sites"]["baselines"]["default_threshold"] == 4.5
    with pytest.raises(OverrideError, match="baselines has"):
        apply_overrides(["baselines.nosuch=1"])
