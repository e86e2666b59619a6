"""A consumer group's lag on every partition of its topics, as the group coordinator has it committed.

"Caught up" is a judgement about the group, not about one member's assignment: after a crash a dead member still
holds its partitions until its session times out (or, with static membership, until it comes back), and a
survivor whose own partitions are done is not done. ``group_lag`` reads the committed offsets of every partition
of the topics (AdminClient ListConsumerGroupOffsets) and their end offsets (one ListOffsets request); a partition
the group never committed counts from its log start (retention may have emptied it).
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

__all__ = ["group_caught_up", "group_lag"]

TIMEOUT_S = 10.0


def group_lag(client: AdminClient, group: str, topics: Iterable[str],
              timeout_s: float = TIMEOUT_S) -> dict[tuple[str, int], int]:
    """(topic, partition) -> records the group has not committed, for every partition of ``topics``.

    Raises KafkaException (or TimeoutError) when the cluster cannot answer (a leader being elected): the caller
    treats that as "not known yet"."""
    names = sorted(set(topics))
    md = client.list_topics(timeout=timeout_s)
    tps = [TopicPartition(t, p) for t in names if t in md.topics for p in sorted(md.topics[t].partitions)]
    if not tps:
        return {}
    req = ConsumerGroupTopicPartitions(group, tps)
    res = client.list_consumer_group_offsets([req], request_timeout=timeout_s)[group].result(timeout=timeout_s)
    committed = {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions}
    ends = {(tp.topic, tp.partition): f.result(timeout=timeout_s).offset for tp, f in client.list_offsets(
        {tp: OffsetSpec.latest() for tp in tps}, request_timeout=timeout_s).items()}
    never = [TopicPartition(t, p) for (t, p), off in committed.items() if off < 0]
    starts: dict[tuple[str, int], int] = {}
    if never:
        starts = {(tp.topic, tp.partition): f.result(timeout=timeout_s).offset for tp, f in client.list_offsets(
            {tp: OffsetSpec.earliest() for tp in never}, request_timeout=timeout_s).items()}
    out = {}
    for key, end in ends.items():
        at = committed.get(key, -1)
        if at < 0:
            at = starts.get(key, 0)
        out[key] = max(0, end - at)
    return out


def group_caught_up(client: AdminClient, group: str, topics: Iterable[str], timeout_s: float = TIMEOUT_S) -> bool:
    return not any(group_lag(client, group, topics, timeout_s).values())
