"""Recovery and determinism of the worker on the real broker, the worker a real subprocess.

What is asserted, precisely: after SIGKILL + restart (or with two workers sharing the partitions, one of them
SIGKILLed), the *final* output per stable id equals the in-process reference run over the same input
partitions: every signal window (all counts), every anomaly, every incident at its highest revision, every
fraud score id. "Not doubled" = no two different ids for the same thing: one incident id per reference
incident (same id set), one ticket command id per triggering finding/score. The same id re-emitted after
redelivery is allowed (sinks upsert on it) and is not counted as doubling.

Determinism: the reference is computed twice, feeding each partition's topics in two different interleavings
(each topic partition in offset order), and both equal each other and the worker's output (which consumed the
topics interleaved as Faust fetched them, and across a crash or a rebalance). The guarantee holds for input
already in Kafka (a replay or a backlog: the sparse topics are fetched ahead of the activity clock). Live, it
holds while a record of attendance/alerts/findings is consumed no later than the activity of its partition
has moved ``grace`` past its event time; a simulator producing 24 h of events in seconds breaks that, which
is why these tests produce first and then start the workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulator.config import HOUR_MS, SimConfig
from simulator.produce import ProduceReport, simulate
from streams.core.types import Out
from streams.testkit import (
    WorkerProcess,
    decoded,
    final_by_id,
    free_port,
    group_caught_up,
    group_lag,
    read_topic,
    reference_outputs,
    wait_for,
)

pytestmark = pytest.mark.integration

CFG = SimConfig(seed=11, tenants=1, sites_per_tenant=30, guards_per_site=4, span=24 * HOUR_MS,
                scenario_rate=0.3)


def _produce(bootstrap: str, ns: str) -> ProduceReport:
    """The whole input first: the worker then replays a backlog (see the module doc on what that guarantees)."""
    rep = simulate(CFG, bootstrap, ns, progress=None)
    assert rep.ok, rep.errors
    return rep


def _by_topic(outs: list[Out]) -> dict[str, list[dict[str, Any]]]:
    got: dict[str, list[dict[str, Any]]] = {}
    for o in outs:
        got.setdefault(o.topic, []).append(o.record)
    return got


def _assert_matches_reference(bootstrap: str, ns: str) -> None:
    ref = _by_topic(reference_outputs(bootstrap, ns, interleave="topic-major"))
    ref_time = _by_topic(reference_outputs(bootstrap, ns, interleave="time"))
    got = {short: decoded(read_topic(bootstrap, ns, short))
           for short in ("signal-windows", "anomalies", "incidents", "fraud-scores", "ticket-commands")}
    # The pipeline's outputs; the site stage's SITE windows and statistical anomalies: test_worker*.py.
    got["signal-windows"] = [w for w in got["signal-windows"] if w["scope"] == "PERSON"]
    got["anomalies"] = [a for a in got["anomalies"] if a["baseline_id"].startswith("rule:")]
    for short, id_field, rev in (("signal-windows", "window_id", None), ("anomalies", "anomaly_id", None),
                                 ("incidents", "incident_id", "revision"), ("fraud-scores", "score_id", None)):
        want = final_by_id(ref.get(short, []), id_field, rev)
        assert want, f"reference has no {short}"
        assert repr(final_by_id(ref_time.get(short, []), id_field, rev)) == repr(want), \
            f"{short}: reference not deterministic"
        have = final_by_id(got[short], id_field, rev)
        assert set(have) == set(want), f"{short}: ids differ: {len(set(have) ^ set(want))}"
        # repr: fraud feature vectors hold NaN (missing), and NaN != NaN
        differ = [k for k in want if repr(have[k]) != repr(want[k])]
        assert not differ, f"{short}: {len(differ)} differ, e.g. {have[differ[0]]} != {want[differ[0]]}"
    per_trigger: dict[str, set[str]] = {}
    for c in got["ticket-commands"]:
        per_trigger.setdefault(c["related_event_id"], set()).add(c["command_id"])
    assert all(len(ids) == 1 for ids in per_trigger.values())
    assert set(per_trigger) == {c["related_event_id"] for c in ref.get("ticket-commands", [])}


def test_sigkill_and_restart_resume_without_loss_or_doubling(kafka_bootstrap: str, namespace: str,
                                                            tmp_path: Path) -> None:
    rep = _produce(kafka_bootstrap, namespace)
    port = free_port()
    first = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "a", port, tmp_path / "a.log").start()
    try:
        wait_for(lambda: first.processed() >= 8000, 90, "the first worker to process 8000 records")
    finally:
        first.kill()  # SIGKILL mid-stream: nothing flushed, nothing committed on the way out
    second = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "b", port, tmp_path / "b.log").start()
    try:
        wait_for(lambda: group_caught_up(kafka_bootstrap, namespace), 120, "the restarted worker to catch up")
        m = second.metrics()
    finally:
        second.stop()
    # The restarted worker resumed from committed offsets (it did not reprocess the first worker's records).
    assert 0 < sum(v for k, v in m.items() if k.startswith("noc_worker_events_processed_total")) \
        < rep.total, second.log_tail()
    _assert_matches_reference(kafka_bootstrap, namespace)


def test_two_workers_one_killed_lose_nothing(kafka_bootstrap: str, namespace: str, tmp_path: Path) -> None:
    _produce(kafka_bootstrap, namespace)
    keep = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "a", free_port(), tmp_path / "a.log").start()
    victim = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "b", free_port(), tmp_path / "b.log").start()
    try:
        # Both have processed and committed: a worker SIGKILLed before its first commit can leave its partitions
        # unfetched by the survivor (faust #629, a known gap in the README), which is not what this test is about.
        wait_for(lambda: keep.processed() > 0 and victim.processed() > 0
                 and all(committed >= 0 for committed, _end in group_lag(kafka_bootstrap, namespace).values()),
                 90, "both workers to own partitions, process records and commit")
        victim.kill()
        try:
            wait_for(lambda: group_caught_up(kafka_bootstrap, namespace), 120, "the survivor to take over and catch up")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {group_lag(kafka_bootstrap, namespace)}\n{keep.log_tail()}") from exc
    finally:
        keep.stop()
        if victim.alive():
            victim.kill()
    _assert_matches_reference(kafka_bootstrap, namespace)
