"""Consumer lag per group: committed offsets against high watermarks, polled with the Kafka admin client."""

from __future__ import annotations

import asyncio
import logging

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from gateway.metrics import CONSUMER_GROUP_LAG

log = logging.getLogger("nocstream.gateway.lag")


def group_lag(bootstrap: str, timeout_s: float = 10.0) -> dict[tuple[str, str], int]:
    """``{(group, topic): lag}`` for every consumer group with committed offsets."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout_s * 1000)})
    groups = admin.list_consumer_groups(request_timeout=timeout_s).result(timeout=timeout_s)
    ids = [g.group_id for g in groups.valid if not g.group_id.startswith("noc-gateway-")]
    out: dict[tuple[str, str], int] = {}
    if not ids:
        return out
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "noc-gateway-lag-probe",
                      "enable.auto.commit": False, "socket.timeout.ms": int(timeout_s * 1000)})
    try:
        for gid in ids:
            futs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(gid)],
                                                     request_timeout=timeout_s)
            for fut in futs.values():
                res = fut.result(timeout=timeout_s)
                for tp in res.topic_partitions or []:
                    if tp.offset < 0:
                        continue
                    _, high = probe.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout_s)
                    key = (gid, tp.topic)
                    out[key] = out.get(key, 0) + max(0, high - tp.offset)
    finally:
        probe.close()
    return out


async def poll_group_lag(bootstrap: str, every_s: float) -> None:
    while True:
        try:
            lags = await asyncio.to_thread(group_lag, bootstrap)
            for (group, topic_name), lag in lags.items():
                CONSUMER_GROUP_LAG.labels(group, topic_name).set(lag)
        except (KafkaException, TimeoutError) as exc:
            log.warning("consumer lag poll failed: %s", exc)
        await asyncio.sleep(every_s)
