"""Service-free parts of the replay runner and CLI: output timestamps, progress, manifests, refusals."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from infra.cli import main as noc
from streams.replay import Progress, ReplayReport, ReplayRequest, _validate, out_time, read_manifest, write_manifest
from streams.replay_config import apply_overrides
from streams.replay_io import ReplayError
from streams.replay_metrics import PR, Metrics


def test_out_time_prefers_event_time_fields() -> None:
    assert out_time({"occurred_at": 5, "window_end": 9}, 1) == 5
    assert out_time({"window_start": 3, "window_end": 9}, 1) == 9
    assert out_time({"issued_at": 7}, 1) == 7
    assert out_time({"timestamp": 8, "payload": "{}"}, 1) == 8
    assert out_time({"nothing": "here"}, 42) == 42


def test_progress_reports_range_share_and_rate() -> None:
    out = io.StringIO()
    bar = Progress(out, 0, 1000, total=4096, every_s=0.0)
    bar.last = -1e9  # the first report is due at once
    for i in range(2048):
        bar.tick(i // 4)
    bar.done()
    text = out.getvalue()
    assert "% of range" in text and "rec/s" in text and "100.0% of range" in text.splitlines()[-1]
    Progress(None, 0, 1, 1).done()  # quiet: no output, no error


def test_manifest_round_trip(tmp_path: Path) -> None:
    rep = ReplayReport("sbx", "src", 0, 10, apply_overrides(["fraud.threshold=0.7"]))
    rep.records_in["activity"] = 3
    rep.metrics = [Metrics("sbx", {"anomalies": 1}, PR(1, 0, 0, 0), PR(0, 0, 0, 0), PR(0, 0, 0, 0))]
    write_manifest(rep, tmp_path)
    got = read_manifest("sbx", tmp_path)
    assert got is not None
    assert got["source"] == "src" and got["records_in"] == {"activity": 3}
    assert got["config"]["overrides"] == [["fraud.threshold", "0.7"]]
    assert Metrics.from_dict(got["metrics"][0]) == rep.metrics[0]
    assert read_manifest("nope", tmp_path) is None


@pytest.mark.parametrize("kw, match", [
    ({"sandbox": "noc"}, "live namespace"),
    ({"sandbox": "src"}, "into itself"),
    ({"to_ms": 0}, "after --from"),
    ({"topics": ("attendance", "fraud-scores")}, "not replayable"),
    ({"topics": ("attendance", "alerts")}, "add activity"),
    ({"procs": -1}, "--procs must not be negative"),
])
def test_requests_refused_before_any_io(kw: dict[str, object], match: str) -> None:
    base: dict[str, object] = {"bootstrap": "127.0.0.1:1", "source": "src", "sandbox": "sbx", "from_ms": 0,
                               "to_ms": 10}
    base.update(kw)
    with pytest.raises(ReplayError, match=match):
        _validate(ReplayRequest(**base))  # type: ignore[arg-type]


def test_cli_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    assert noc(["replay", "--from", "2026-11-01T00:00Z", "--to", "2026-11-02T00:00Z", "--namespace", "noc"]) == 2
    assert "live namespace" in capsys.readouterr().err
    assert noc(["replay", "--from", "2026-11-01T00:00Z", "--namespace", "x"]) == 2
    assert "needs --from, --to and --namespace" in capsys.readouterr().err
    assert noc(["replay", "--from", "2026-11-01T00:00Z", "--to", "2026-11-02T00:00Z", "--namespace", "x",
                "--set", "bogus=1"]) == 2
    assert "unknown setting" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        noc(["replay", "--from", "yesterday-ish", "--to", "2026-11-02", "--namespace", "x"])
    assert "not a time" in capsys.readouterr().err
    assert noc(["export", "--topic", "nope", "--format", "avro", "--out", "/tmp/never.avro"]) == 2
    assert "unknown topic" in capsys.readouterr().err
    assert noc(["export", "--topic", "nope", "--format", "avro", "--revisions", "all", "--out", "/tmp/never.avro"]) == 2
    with pytest.raises(SystemExit):
        noc(["export", "--topic", "incidents", "--format", "avro", "--revisions", "some", "--out", "/tmp/never.avro"])
    assert "invalid choice" in capsys.readouterr().err
