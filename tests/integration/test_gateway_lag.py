"""Consumer lag per group, as the gateway exports it (committed offsets against high watermarks)."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from gateway.lag import group_lag
from schemas.topics import topic

pytestmark = pytest.mark.integration


def test_group_lag_counts_uncommitted_records(kafka_bootstrap: str, namespace: str) -> None:
    name = topic("alerts", namespace)
    prod = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(10):
        prod.produce(name, key=b"k", value=b"v%d" % i, partition=0)
    assert prod.flush(10) == 0
    group = "lagtest-" + uuid.uuid4().hex[:8]
    cons = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        cons.commit(offsets=[TopicPartition(name, 0, 4)], asynchronous=False)  # 4 of 10 done
    finally:
        cons.close()
    lags = group_lag(kafka_bootstrap)
    assert lags[(group, name)] == 6
