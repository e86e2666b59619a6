"""``noc sink --until-caught-up`` judges the whole group's lag, not its own assignment.

Two sink members with static membership share the partitions and both crash (SIGKILL); one comes back with
``--until-caught-up``. A static member that rejoins gets its own partitions back at once, while the dead one holds
its share until its session times out (10 s), so the survivor finishes its own share first. Judged by its own
assignment it stopped there, "caught up", with the dead member's share unwritten; judged by the group it waits,
takes the dead member's partitions over when the session expires, and stops with every record stored once.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from test_sink_faults import _count, _produce_activity

from infra.config import REPO_ROOT
from infra.group_lag import group_caught_up, group_lag
from schemas.topics import PERSON_PARTITIONS, topic
from sinks.migrate import migrate
from streams.testkit import wait_for

pytestmark = pytest.mark.integration


def _sink(dsn: str, bootstrap: str, ns: str, instance: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "infra.cli", "sink", "--dsn", dsn, "--bootstrap", bootstrap, "--namespace", ns,
           "--topics", "activity", "--group", f"sink-{ns}", "--instance-id", instance, "--batch-size", "2000",
           "--no-publish", "--no-migrate", *extra]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)


def _assigned(log: Path) -> list[int]:
    return [int(n) for n in re.findall(r"partitions assigned: (\d+)", log.read_text(errors="replace"))]


@pytest.mark.faults  # failed once in a CI run, cause not found yet: make test-faults
def test_until_caught_up_waits_for_the_partitions_a_dead_member_holds(
        kafka_bootstrap: str, namespace: str, pg_schema: tuple[str, str], tmp_path: Path) -> None:
    dsn = pg_schema[0]
    n = 120_000
    migrate(dsn)
    _produce_activity(kafka_bootstrap, topic("activity", namespace), n)
    client = AdminClient({"bootstrap.servers": kafka_bootstrap})
    group, name = f"sink-{namespace}", topic("activity", namespace)
    before = group_lag(client, group, [name])
    assert sorted(before) == [(name, p) for p in range(PERSON_PARTITIONS)] and sum(before.values()) == n
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = _sink(dsn, kafka_bootstrap, namespace, "a", log_a)
    b = _sink(dsn, kafka_bootstrap, namespace, "b", log_b)
    try:
        wait_for(lambda: _assigned(log_b)[-1:] == [3] and _assigned(log_a)[-1:] == [3], 60,
                 "the two members to share the partitions", every_s=0.05)
        # Both crash: no LeaveGroup, so the group keeps both static members and their partitions until their
        # sessions expire (10 s).
        for p in (a, b):
            p.send_signal(signal.SIGKILL)
            p.wait(10)
        lagging = {k for k, v in group_lag(client, group, [name]).items() if v}
        # "a" comes back at once and gets its own partitions back without a rebalance; "b" stays dead.
        survivor = _sink(dsn, kafka_bootstrap, namespace, "a", log_a, "--until-caught-up")
        code = survivor.wait(180)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    assert len(lagging) >= 4, f"the members had stored nearly everything before the crash: {lagging}"
    text = log_a.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert _assigned(log_a)[-1] == PERSON_PARTITIONS, "the survivor stopped before taking the dead member's share"
    assert _count(dsn) == n  # every record, once (_count asserts no duplicate)
    assert group_caught_up(client, group, [name])


def test_group_lag_counts_a_never_committed_partition_from_its_log_start(kafka_bootstrap: str,
                                                                         namespace: str) -> None:
    name = topic("activity", namespace)
    _produce_activity(kafka_bootstrap, name, 600)
    client = AdminClient({"bootstrap.servers": kafka_bootstrap})
    lags = group_lag(client, f"nobody-{namespace}", [name])
    assert sorted(lags) == [(name, p) for p in range(PERSON_PARTITIONS)]
    assert sum(lags.values()) == 600
    assert not group_caught_up(client, f"nobody-{namespace}", [name])
    assert group_lag(client, f"nobody-{namespace}", [f"{namespace}.missing"]) == {}
