"""Registry, activation events and training from a Kafka replay, on the real Postgres and Kafka."""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from models_world import world

from infra.cli import main as noc
from models.artifact import write_artifact
from models.jobs import TrainJob, activate, rollback, run_training
from models.registry import Registry, RegistryError
from models.scoring import ModelCache
from models.train import TrainConfig, TrainingDataError, build_dataset, fit, time_split
from schemas.serde import decode, encode
from schemas.topics import person_key, site_key, topic

pytestmark = pytest.mark.integration
FAST = TrainConfig(n_trees=40, max_depth=4)
TOPIC_OF = {"attendance_event": "attendance", "activity_signal": "activity", "label": "labels",
            "site": "ref.sites", "person": "ref.people", "shift": "ref.shifts", "ticket": "tickets"}


def recent(records: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The test world moved by whole days to end yesterday: records older than a topic's retention would be
    deleted by a broker that enforces retention while a test reads them (the local one does not)."""
    stamps = [v for _, r in records for v in r.values() if isinstance(v, int) and v > 10**12]
    day = 86_400_000
    shift = (int(time.time() * 1000) - max(stamps)) // day * day - day
    return [(stem, {k: v + shift if isinstance(v, int) and v > 10**12 else v for k, v in r.items()})
            for stem, r in records]


@pytest.fixture()
def tenant() -> int:
    return random.randrange(10**6, 10**9)


@pytest.fixture()
def dsn(pg_schema: tuple[str, str]) -> str:
    return pg_schema[0]  # the registry's tables in a fresh schema


def _models(tenant: int, tmp_path: Path, n: int) -> list[tuple[Any, Path, str]]:
    ds = build_dataset(world(days=12, people=12, fraud_rate=0.15, seed=2))
    out = []
    for i in range(n):
        art = fit("xgboost", ds, f"t{tenant}-xgb-{i}-{uuid.uuid4().hex[:6]}", TrainConfig(n_trees=5 + i, max_depth=3))
        path, sha = write_artifact(art, tmp_path)
        out.append((art, path, sha))
    return out


def _model_events(bootstrap: str, namespace: str) -> list[tuple[bytes | None, dict[str, Any]]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g{uuid.uuid4().hex[:6]}", "enable.auto.commit": False})
    name = topic("model-events", namespace)
    _, high = c.get_watermark_offsets(TopicPartition(name, 0), timeout=10)
    c.assign([TopicPartition(name, 0, 0)])
    out: list[tuple[bytes | None, dict[str, Any]]] = []
    while len(out) < high:
        msg = c.poll(10)
        assert msg is not None, f"only {len(out)} of {high} model events arrived"
        assert msg.error() is None
        out.append((msg.key(), decode(msg.value(), "model_event")))
    c.close()
    return out


def test_register_activate_rollback_and_hot_reload(dsn: str, kafka_bootstrap: str, namespace: str, tenant: int,
                                                   tmp_path: Path) -> None:
    reg = Registry(dsn)
    (a, pa, sa), (b, pb, sb), (c, pc, sc) = _models(tenant, tmp_path, 3)
    now = datetime.now(UTC)
    for art, path, sha in ((a, pa, sa), (b, pb, sb), (c, pc, sc)):
        row = reg.register(art, path, sha, tenant, {"pr_auc": 0.9, "nan_metric": float("nan")}, now)
        assert row.tenant_id == tenant and not row.is_active and row.metrics["nan_metric"] is None
    assert reg.active(tenant) is None
    with pytest.raises(RegistryError, match="no active model"):
        reg.rollback(tenant)
    out = sys.stdout
    for art in (a, b, c):
        activate(reg, art.version, kafka_bootstrap, namespace, out)
    activate(reg, c.version, kafka_bootstrap, namespace, out)  # again: no new history, event re-published
    assert [r.version for r in reg.list(tenant, all_tenants=False) if r.is_active] == [c.version]
    assert rollback(reg, tenant, kafka_bootstrap, namespace, out).version == b.version
    assert rollback(reg, tenant, kafka_bootstrap, namespace, out).version == a.version
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback(tenant)
    active = reg.active(tenant)
    assert active is not None and active.version == a.version
    with pytest.raises(RegistryError, match="no model version"):
        reg.activate("no-such-version")

    events = _model_events(kafka_bootstrap, namespace)
    assert [e["action"] for _, e in events] == ["ACTIVATED"] * 4 + ["ROLLED_BACK"] * 2
    assert all(k == str(tenant).encode() for k, _ in events)
    cache = ModelCache()
    for _, ev in events:  # a worker replaying the compacted topic ends on the active model
        cache.apply(ev)
    assert cache.scorer_for(tenant).model_version == a.version
    assert cache.scorer_for(tenant + 1).model_version == "rules-v1"


def _produce(bootstrap: str, namespace: str, records: list[tuple[str, dict[str, Any]]]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for stem, rec in records:
        short = TOPIC_OF[stem]
        if stem == "site":
            key = site_key(rec["tenant_id"], rec["site_id"])
        elif stem == "shift":
            key = f"{rec['tenant_id']}:{rec['shift_id']}".encode()
        else:
            key = person_key(rec["tenant_id"], rec.get("person_id"), rec.get("site_id"))
        t = int(rec["occurred_at"] if "occurred_at" in rec else rec["updated_at"])
        p.produce(topic(short, namespace), key=key, value=encode(stem, rec), timestamp=t)
        p.poll(0)
    assert p.flush(30) == 0


def test_train_from_kafka_replay_then_auto_activate(dsn: str, kafka_bootstrap: str, namespace: str, tenant: int,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = recent(world(days=24, people=18, fraud_rate=0.1, seed=3, tenant=tenant))
    other = recent(world(days=2, people=3, fraud_rate=0.5, seed=4, tenant=tenant + 1))  # another tenant: filtered out
    _produce(kafka_bootstrap, namespace, records + other)
    _produce(kafka_bootstrap, namespace, records[: len(records) // 2])  # a redelivered half: read once
    until = max(r.get("occurred_at", 0) for _, r in records) + 1
    job = TrainJob(tenant=tenant, days=40, until_ms=until, algo="xgboost", bootstrap=kafka_bootstrap,
                   namespace=namespace, dsn=dsn, models_dir=tmp_path, auto_activate=True, config=FAST)
    first = run_training(job)
    expected = build_dataset(records, tenant)
    assert first.result.train_size + first.result.test_size == len(expected)
    assert first.activated and first.row is not None and first.comparison is not None
    assert first.comparison.reason == "no active model"
    reg = Registry(dsn)
    active = reg.active(tenant)
    assert active is not None and active.version == first.row.version and active.metrics["pr_auc"] > 0.8
    assert Path(active.artifact_path).is_file()
    assert noc(["model", "list", "--tenant", str(tenant), "--json", "--dsn", dsn]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["version"], m["is_active"]) for m in listed] == [(first.row.version, True)]
    assert listed[0]["metrics"]["train_size"] == first.result.train_size
    # the same data again trains the same model: it does not beat the active one, so it stays registered only
    second = run_training(job)
    assert second.row is not None and not second.activated
    assert second.comparison is not None and second.comparison.active_pr_auc == second.comparison.candidate_pr_auc
    active = reg.active(tenant)
    assert active is not None and active.version == first.row.version
    # the holdout used for the comparison is the newest share of the replayed events
    _, test = time_split(expected, job.test_size)
    assert sorted(second.test.event_ids) == sorted(test.event_ids)


def test_cli_refuses_thin_history_and_lists_models(dsn: str, kafka_bootstrap: str, namespace: str, tenant: int,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _produce(kafka_bootstrap, namespace, recent(world(days=2, people=4, fraud_rate=0.0, seed=9, tenant=tenant)))
    common = ["--bootstrap", kafka_bootstrap, "--namespace", namespace, "--dsn", dsn]
    rc = noc(["train", "--tenant", str(tenant), "--days", "3650", "--algo", "xgboost", *common])
    err = capsys.readouterr().err
    assert rc == 2 and "refusing to train" in err and "16 labelled attendance events" in err
    assert "0 fraud labels in the training period" in err
    assert noc(["model", "list", "--tenant", str(tenant), "--dsn", dsn]) == 0
    assert "no models registered" in capsys.readouterr().out
    assert noc(["model", "rollback", "--tenant", str(tenant), *common]) == 2
    with pytest.raises(TrainingDataError):
        run_training(TrainJob(tenant=tenant, days=3650, bootstrap=kafka_bootstrap, namespace=namespace, dsn=dsn,
                              register=False, config=FAST))
