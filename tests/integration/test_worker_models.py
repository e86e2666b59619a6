"""Inline fraud scoring in a running worker subprocess: rules-v1 until a model is activated, then the activated
model, hot-reloaded from the model-events topic without a restart; high scores open SECURITY_FRAUD ticket
commands (one per person per 24 h of event time) and go on the consolidated feed."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from models.jobs import TrainJob, activate, run_training
from models.registry import Registry
from models.train import TrainConfig
from simulator.config import DAY_MS, HOUR_MS, MINUTE_MS, SimConfig
from simulator.generate import SimRecord, Simulation
from simulator.produce import run as produce
from streams.core.feed import FRAUD_FEED_LEVELS
from streams.testkit import Consumed, WorkerProcess, decoded, free_port, group_caught_up, read_topic, wait_for

pytestmark = pytest.mark.integration

# A day of one small tenant with many per-punch frauds (the rules and the model both see them).
WORLD = SimConfig(seed=8, tenants=1, sites_per_tenant=20, guards_per_site=3, span=24 * HOUR_MS,
                  scenario_rates={"GPS_SPOOFING": 0.3, "IMPOSSIBLE_TRAVEL": 0.3, "BUDDY_PUNCHING": 0.1,
                                  "OFF_GEOFENCE": 0.1})
BANDS = ((0.30, "LOW"), (0.60, "MEDIUM"), (0.80, "HIGH"), (float("inf"), "CRITICAL"))


def _band(p: float) -> str:
    return next(level for upper, level in BANDS if p < upper)


def _scores(bootstrap: str, ns: str) -> list[Consumed]:
    """fraud-scores so far (within a partition, a higher offset was produced later)."""
    return read_topic(bootstrap, ns, "fraud-scores")


def _ends(records: list[Consumed]) -> dict[int, int]:
    """partition -> end offset of what was read."""
    ends: dict[int, int] = {}
    for r in records:
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    return ends


def _forged_pair(records: list[SimRecord], mid: int) -> list[SimRecord]:
    """Two forged check-ins ten minutes apart by one honest guard: mock location, 1 km off the site, a device
    nobody registered, a face match of 0.2. The rules score both >= 0.80; the 24 h cooldown allows one ticket."""
    fraudsters = {r.record["person_id"] for r in records if r.topic == "labels" and r.record["is_fraud"]}
    punch = next(r for r in records if r.topic == "attendance" and r.record["event_type"] == "CHECK_IN"
                 and r.record["person_id"] not in fraudsters and r.at < mid - 4 * HOUR_MS)
    out = []
    for i, after in enumerate((MINUTE_MS, 11 * MINUTE_MS)):
        rec = dict(punch.record, event_id=f"{punch.record['event_id']}-forged-{i}", is_mock_location=True,
                   lat=punch.record["lat"] + 0.01, device_id="forged-device", face_match_score=0.2,
                   occurred_at=punch.record["occurred_at"] + after, received_at=punch.record["received_at"] + after)
        out.append(SimRecord(punch.topic, punch.key, punch.stem, rec, punch.at + after))
    return out


def _check_score(s: dict[str, Any]) -> None:
    p = float(s["fraud_probability"])
    assert 0.0 <= p <= 1.0 and s["risk_level"] == _band(p), s
    assert len(s["reasons"]) <= 3, s


def test_activated_model_hot_reloads_in_running_worker(kafka_bootstrap: str, namespace: str,
                                                       pg_schema: tuple[str, str], tmp_path: Path) -> None:
    dsn = pg_schema[0]
    records = list(Simulation(WORLD))
    mid = WORLD.start + WORLD.span // 2
    forged = _forged_pair(records, mid)
    first = sorted([*(r for r in records if r.at < mid), *forged], key=lambda r: r.at)
    second = [r for r in records if r.at >= mid]
    assert first and second

    w = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "faust", free_port(), tmp_path / "worker.log")
    w.start()
    try:
        assert w.proc is not None
        pid = w.proc.pid
        # -- before any model: the rules score every released punch
        rep = produce(first, kafka_bootstrap, namespace, progress=None)
        assert rep.ok, rep.errors
        forged_ids = {f.record["event_id"] for f in forged}

        def forged_scored() -> bool:
            return forged_ids <= {s["event_id"] for s in decoded(_scores(kafka_bootstrap, namespace), "fraud_score")}

        wait_for(lambda: group_caught_up(kafka_bootstrap, namespace) and forged_scored(), 60,
                 "the worker to score the first batch")
        rules = decoded(_scores(kafka_bootstrap, namespace), "fraud_score")
        assert {s["model_version"] for s in rules} == {"rules-v1"}
        assert w.metrics().get('noc_worker_active_model{model_version="rules-v1",tenant="*"}') == 1.0
        assert [s["fraud_probability"] >= 0.80 for s in rules if s["event_id"] in forged_ids] == [True, True]
        for s in rules:
            _check_score(s)

        # -- a global model trained on another simulated world, registered, activated (model_event published)
        job = TrainJob(tenant=None, days=10, from_sim=21, algo="xgboost", dsn=dsn, models_dir=tmp_path / "models",
                       bootstrap=kafka_bootstrap, namespace=namespace, config=TrainConfig(n_trees=40, max_depth=4))
        trained = run_training(job, out=io.StringIO())
        assert trained.row is not None
        version = trained.row.version
        assert Path(trained.row.artifact_path).is_file()
        pre_activation = _ends(_scores(kafka_bootstrap, namespace))  # the tick may still release punches
        activate(Registry(dsn), version, kafka_bootstrap, namespace, io.StringIO())
        wait_for(lambda: f"is now {version}" in w.log_path.read_text(errors="replace"), 30,
                 "the worker to load the activated model")
        reloaded = _ends(_scores(kafka_bootstrap, namespace))

        # -- the same worker process scores the second half with the new model
        rep = produce(second, kafka_bootstrap, namespace, progress=None)
        assert rep.ok, rep.errors
        wait_for(lambda: group_caught_up(kafka_bootstrap, namespace)
                 and len(_scores(kafka_bootstrap, namespace)) > sum(reloaded.values()),
                 60, "the worker to score the second batch")
        assert w.alive() and w.proc.pid == pid, w.log_tail()
        models = {k: v for k, v in w.metrics().items() if k.startswith("noc_worker_active_model")}
        assert models == {f'noc_worker_active_model{{model_version="{version}",tenant="*"}}': 1.0}, models
        all_scores = _scores(kafka_bootstrap, namespace)
        cmds = [c for c in decoded(read_topic(kafka_bootstrap, namespace, "ticket-commands"), "ticket_command")
                if c["category"] == "SECURITY_FRAUD"]
        feed = [e for e in decoded(read_topic(kafka_bootstrap, namespace, "events"), "noc_event")
                if e["type"] == "fraud_scored"]
    finally:
        w.stop()

    old = [r for r in all_scores if r.offset < pre_activation.get(r.partition, 0)]
    new = [r for r in all_scores if r.offset >= reloaded.get(r.partition, 0)]
    assert {s["model_version"] for s in decoded(old, "fraud_score")} == {"rules-v1"}
    new_scores = decoded(new, "fraud_score")
    assert new_scores and {s["model_version"] for s in new_scores} == {version}, w.log_tail()
    scores = decoded(all_scores, "fraud_score")
    for s in scores:
        _check_score(s)
    assert len({s["score_id"] for s in scores}) == len(scores)  # each score once

    # -- tickets: only for scores >= 0.80, at most one per person per 24 h, and every such score covered by one
    by_id = {s["score_id"]: s for s in scores}
    high = [s for s in scores if s["fraud_probability"] >= 0.80]
    assert high and cmds, sorted((s["fraud_probability"], s["model_version"]) for s in scores)[-5:]
    assert len({c["command_id"] for c in cmds}) == len(cmds)
    ticketed: dict[tuple[int, str], list[int]] = {}
    for c in cmds:
        s = by_id[c["related_event_id"]]
        assert s["fraud_probability"] >= 0.80 and c["person_id"] == s["person_id"], (c, s)
        ticketed.setdefault((c["tenant_id"], c["person_id"]), []).append(int(c["issued_at"]))
    for times in ticketed.values():
        times.sort()
        assert all(b - a >= DAY_MS for a, b in itertools.pairwise(times)), times
    for s in high:
        times = ticketed.get((s["tenant_id"], s["person_id"]), [])
        assert any(abs(s["occurred_at"] - t) < DAY_MS for t in times), s
    # the forged pair: two rules-v1 scores >= 0.80 for one person 10 min apart, one ticket (the first)
    person = forged[0].record["person_id"]
    assert [c["related_event_id"] for c in cmds if c["person_id"] == person] == \
        [s["score_id"] for s in scores if s["event_id"] == forged[0].record["event_id"]]
    # the activated model's high scores open tickets too (the simulated world's rules reach 0.80 nowhere)
    assert any(by_id[c["related_event_id"]]["model_version"] == version and f"model {version}" in c["description"]
               for c in cmds)

    # -- the consolidated feed: one fraud_scored event per HIGH/CRITICAL score, none for the others
    serious = {s["score_id"] for s in scores if s["risk_level"] in FRAUD_FEED_LEVELS}
    fed = [json.loads(e["payload"])["score_id"] for e in feed]
    assert serious and sorted(fed) == sorted(serious)
    assert any(by_id[sid]["model_version"] == version for sid in fed)
