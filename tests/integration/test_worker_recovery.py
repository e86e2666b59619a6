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

import dataclasses
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from simulator.config import HOUR_MS, SimConfig
from simulator.generate import Simulation
from simulator.produce import ProduceReport, run, simulate
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
    # The pipeline's outputs; the site stage's SITE windows, statistical anomalies and incidents about a site
    # alone: test_worker*.py.
    got["signal-windows"] = [w for w in got["signal-windows"] if w["scope"] == "PERSON"]
    got["anomalies"] = [a for a in got["anomalies"] if a["baseline_id"].startswith("rule:")]
    got["incidents"] = [i for i in got["incidents"] if i.get("person_id") is not None]
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
    # A commit every 2,000 records: by 3,000 the state was written (and the offsets committed) at least once, and
    # most of the ~20k inputs are still to do when it dies.
    extra = ["--batch-size", "1000", "--flush-records", "2000"]
    first = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "a", port, tmp_path / "a.log", extra).start()
    try:
        wait_for(lambda: first.processed() >= 3000, 90, "the first worker to process 3000 records", every_s=0.02)
    finally:
        first.kill()  # SIGKILL mid-stream: nothing flushed, nothing committed on the way out
    assert not group_caught_up(kafka_bootstrap, namespace), "the first worker had committed everything before the kill"
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


def _members(bootstrap: str, group: str) -> int:
    """How many members the group coordinator counts in ``group`` now."""
    from infra.topics_admin import admin

    client = admin(bootstrap)  # held until the answer is in: a collected client never completes its futures
    desc = client.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=10)
    return len(desc.members)


def test_a_worker_paused_past_its_session_timeout_carries_on_without_loss(kafka_bootstrap: str, namespace: str,
                                                                          tmp_path: Path) -> None:
    """The group drops a member it has not heard from for session.timeout.ms (10 s): a broker restart or a process
    paused that long. Its next commit is refused (unknown member). The worker must rejoin and carry on, not stop:
    the state it flushed holds the offset marker, so the redelivered records are skipped, nothing lost or doubled."""
    from streams.input_loop import pipeline_group

    _produce(kafka_bootstrap, namespace)
    extra = ["--batch-size", "1000", "--flush-records", "1"]  # a commit after every batch
    w = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "a", free_port(), tmp_path / "a.log", extra).start()
    try:
        wait_for(lambda: w.processed() >= 3000, 90, "the worker to process 3000 records", every_s=0.02)
        assert w.proc is not None
        w.proc.send_signal(signal.SIGSTOP)  # the pipeline process only: its site stage runs on
        try:
            wait_for(lambda: _members(kafka_bootstrap, pipeline_group(namespace)) == 0, 60,
                     "the group to drop the paused member", every_s=0.5)
        finally:
            w.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: not w.alive() or group_caught_up(kafka_bootstrap, namespace), 180,
                 "the resumed worker to catch up")
        assert w.alive(), w.log_tail()
    finally:
        w.stop()
    _assert_matches_reference(kafka_bootstrap, namespace)


def _inputs_processed(w: WorkerProcess, short: str) -> float:
    return sum(v for k, v in w.metrics().items()
               if k.startswith("noc_worker_events_processed_total") and f'topic="{short}"' in k)


def _assignment(w: WorkerProcess) -> set[int]:
    """The input partitions the worker's latest assignment gave it (from its log)."""
    found = re.findall(r"pipeline: partitions \[([\d, ]*)\] assigned", w.log_tail(400))
    return {int(p) for p in found[-1].split(",") if p.strip()} if found else set()


def test_two_workers_one_killed_lose_nothing(kafka_bootstrap: str, namespace: str, tmp_path: Path) -> None:
    # Both workers must share the partitions while records remain. So: reference data first (loaded at start),
    # then both workers, then — once the group gave each half the partitions — the sparse inputs, then the
    # activity. Every sparse record is in Kafka before any activity, so this is still a backlog as far as the
    # event-time clock is concerned (see the module doc) and the outputs stay deterministic.
    records = list(Simulation(dataclasses.replace(CFG, sites_per_tenant=60)))
    phases = [[r for r in records if r.topic.startswith("ref.")],
              [r for r in records if not r.topic.startswith("ref.") and r.topic != "activity"],
              [r for r in records if r.topic == "activity"]]
    assert run(phases[0], kafka_bootstrap, namespace, seed=CFG.seed).ok
    extra = ["--batch-size", "500", "--flush-records", "1000"]  # small batches, a commit every 1,000 records
    keep = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "a", free_port(), tmp_path / "a.log", extra).start()
    victim = WorkerProcess(namespace, kafka_bootstrap, tmp_path / "b", free_port(), tmp_path / "b.log", extra).start()
    try:
        wait_for(lambda: _assignment(keep) | _assignment(victim) == set(range(6))
                 and not _assignment(keep) & _assignment(victim), 90, "the two workers to share the partitions")
        assert run(phases[1], kafka_bootstrap, namespace, seed=CFG.seed).ok
        reports: list[ProduceReport] = []
        producing = threading.Thread(target=lambda: reports.append(
            run(phases[2], kafka_bootstrap, namespace, seed=CFG.seed)))
        producing.start()
        # 1,500 records with a flush every 1,000: the victim has written state (and committed) at least once. Its
        # share is ~20k activity records, so it is killed with most of them still to do.
        wait_for(lambda: _inputs_processed(victim, "activity") >= 1500, 90, "the victim to process activity",
                 every_s=0.02)
        victims = _assignment(victim)
        victim.kill()  # SIGKILL mid-stream: its batch in hand and anything since its last commit are redone
        left = {p for (_, p) in group_lag(kafka_bootstrap, namespace, ["activity"]) if p in victims}
        assert left, f"the victim had committed all of its partitions {sorted(victims)} before the kill"
        producing.join(120)
        assert reports and reports[0].ok
        # Its partitions move after the session timeout (10 s); then the survivor catches up on everything.
        wait_for(lambda: _assignment(keep) == set(range(6)), 60, "the survivor to take the victim's partitions")
        try:
            wait_for(lambda: group_caught_up(kafka_bootstrap, namespace), 120, "the survivor to take over and catch up")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {group_lag(kafka_bootstrap, namespace)}\n{keep.log_tail()}") from exc
    finally:
        keep.stop()
        if victim.alive():
            victim.kill()
    # The survivor took the victim's partitions over with their state (read back from the changelog).
    assert re.search(r"pipeline: partitions \[0, 1, 2, 3, 4, 5\] assigned \([1-9]\d* restored from the changelog: "
                     r"[1-9]\d* records", keep.log_tail(400)), keep.log_tail(400)
    _assert_matches_reference(kafka_bootstrap, namespace)
