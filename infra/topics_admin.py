"""Apply the topic catalogue to a cluster, idempotently, with confluent-kafka's AdminClient."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

from schemas.topics import CATALOGUE, LIVE_NAMESPACE, TopicSpec

TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class TopicState:
    name: str
    partitions: int
    spec: TopicSpec | None


def admin(bootstrap: str) -> AdminClient:
    # log_level 4 (warnings): librdkafka logs an info line when a short-lived admin handle is destroyed.
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000, "log_level": 4})


@dataclass(frozen=True, slots=True)
class Durability:
    """How a topic is replicated on a cluster of ``brokers``: three replicas from three brokers up, of which two
    must have a write (``min.insync.replicas=2``, with the producers' ``acks=all``) and only an in-sync replica
    may become leader (unclean election off). A single development broker keeps one replica and no extra configs."""

    replication_factor: int
    config: dict[str, str]


def durability(brokers: int) -> Durability:
    rf = max(1, min(3, brokers))
    if rf < 2:
        return Durability(rf, {})
    return Durability(rf, {"min.insync.replicas": str(rf - 1), "unclean.leader.election.enable": "false"})


def cluster_durability(client: AdminClient) -> Durability:
    return durability(len(client.list_topics(timeout=TIMEOUT_S).brokers))


def replication_for(bootstrap: str) -> Durability:
    """The durability of topics created on this cluster (the worker's changelogs and internal topics too)."""
    return cluster_durability(admin(bootstrap))


def apply_topics(bootstrap: str, namespace: str = LIVE_NAMESPACE,
                 specs: tuple[TopicSpec, ...] = CATALOGUE) -> list[str]:
    """Create missing topics, grow partition counts, and align configs. Returns the names created.

    Re-running is harmless: existing topics are left as they are apart from configs and partitions
    that fell behind the catalogue (partitions are never shrunk: Kafka cannot).
    """
    client = admin(bootstrap)
    existing = client.list_topics(timeout=TIMEOUT_S).topics
    dur = cluster_durability(client)
    wanted = {s.name(namespace): s for s in specs}
    new = [NewTopic(name, num_partitions=s.partitions, replication_factor=dur.replication_factor,
                    config={**s.config(), **dur.config})
           for name, s in wanted.items() if name not in existing]
    created: list[str] = []
    if new:
        for name, fut in client.create_topics(new, request_timeout=TIMEOUT_S).items():
            try:
                fut.result(timeout=TIMEOUT_S)
                created.append(name)
            except KafkaException as exc:
                # Another process created it between our listing and our request: that is fine.
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise
    grow = {name: NewPartitions(name, s.partitions) for name, s in wanted.items()
            if name in existing and len(existing[name].partitions) < s.partitions}
    if grow:
        for fut in client.create_partitions(list(grow.values()), request_timeout=TIMEOUT_S).values():
            fut.result(timeout=TIMEOUT_S)
    configs = [ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
        for k, v in {**s.config(), **dur.config}.items()])
        for name, s in wanted.items() if name in existing]
    if configs:
        for fut in client.incremental_alter_configs(configs, request_timeout=TIMEOUT_S).values():
            fut.result(timeout=TIMEOUT_S)
    return sorted(created)


def list_topics(bootstrap: str, namespace: str | None = None) -> list[TopicState]:
    client = admin(bootstrap)
    by_name = {s.name(namespace or LIVE_NAMESPACE): s for s in CATALOGUE}
    out = []
    for name, meta in sorted(client.list_topics(timeout=TIMEOUT_S).topics.items()):
        if name.startswith("__") or (namespace and not name.startswith(namespace + ".")):
            continue
        out.append(TopicState(name, len(meta.partitions), by_name.get(name)))
    return out


def delete_namespace(bootstrap: str, namespace: str) -> list[str]:
    """Delete every topic of a namespace (replay sandboxes and tests); never the live one by accident."""
    if namespace == LIVE_NAMESPACE:
        raise ValueError("refusing to delete the live namespace")
    client = admin(bootstrap)
    names = [n for n in client.list_topics(timeout=TIMEOUT_S).topics if n.startswith(namespace + ".")]
    if names:
        for fut in client.delete_topics(names, request_timeout=TIMEOUT_S).values():
            fut.result(timeout=TIMEOUT_S)
    return sorted(names)
