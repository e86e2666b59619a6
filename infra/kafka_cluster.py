"""A local replicated Kafka 3.9 cluster: N combined broker/controller KRaft nodes from the same Maven jars.

``noc infra up --brokers 3`` runs it beside the single development broker: its own ports (brokers from
``NOC_CLUSTER_PORT``, default 19092, controllers from ``NOC_CLUSTER_CONTROLLER_PORT``, default 19192, one port
each per node) and its own directory (``$NOC_HOME/kafka-cluster``: ``node-<id>/data``, ``node-<id>/logs``,
``node-<id>/kafka.pid``). The jars are the single broker's (``$NOC_HOME/kafka/lib``). Internal topics are
replicated three ways with ``min.insync.replicas=2`` and unclean leader election off, like a production cluster;
the fault tests start a private one on free ports in a temporary directory and kill nodes of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.config import Settings
from infra.kafka_local import LOCK_TIMEOUT_S, LOG4J, _require, fetch_jars, jars_ready
from infra.kafka_local import paths as single_paths
from infra.procs import InfraError, exclusive, pid_alive, port_open, read_pid, stop_pid, tail

__all__ = [
    "ClusterConfig",
    "ClusterState",
    "active_controller",
    "cluster_config",
    "cluster_down",
    "cluster_state",
    "cluster_status",
    "cluster_up",
    "node_kill",
    "node_properties",
    "node_start",
    "partition_leaders",
]

START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ClusterConfig:
    root: Path  # node-<id>/ directories and cluster.id live here
    lib: Path  # the Kafka jars (shared with the single broker)
    brokers: int = 3
    port: int = 19092  # node i (1-based) listens on port + i - 1
    controller_port: int = 19192  # and its controller on controller_port + i - 1
    heap: str = "512m"

    def broker_port(self, node: int) -> int:
        return self.port + node - 1

    def ctrl_port(self, node: int) -> int:
        return self.controller_port + node - 1

    @property
    def nodes(self) -> range:
        return range(1, self.brokers + 1)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.broker_port(n)}" for n in self.nodes)

    def node_dir(self, node: int) -> Path:
        return self.root / f"node-{node}"

    def pid_file(self, node: int) -> Path:
        return self.node_dir(node) / "kafka.pid"

    def logs(self, node: int) -> Path:
        return self.node_dir(node) / "logs"

    def data(self, node: int) -> Path:
        return self.node_dir(node) / "data"

    def properties(self, node: int) -> Path:
        return self.node_dir(node) / "server.properties"


def cluster_config(s: Settings, brokers: int = 3) -> ClusterConfig:
    return ClusterConfig(root=s.home / "kafka-cluster", lib=single_paths(s).lib, brokers=brokers,
                         port=int(os.environ.get("NOC_CLUSTER_PORT") or 19092),
                         controller_port=int(os.environ.get("NOC_CLUSTER_CONTROLLER_PORT") or 19192))


def node_properties(cfg: ClusterConfig, node: int) -> str:
    replicas = min(3, cfg.brokers)
    min_isr = max(1, replicas - 1)
    voters = ",".join(f"{n}@127.0.0.1:{cfg.ctrl_port(n)}" for n in cfg.nodes)
    p, c = cfg.broker_port(node), cfg.ctrl_port(node)
    return "\n".join([
        "process.roles=broker,controller",
        f"node.id={node}",
        f"controller.quorum.voters={voters}",
        f"listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{p}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={cfg.data(node)}",
        "num.partitions=6",
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={min_isr}",
        "unclean.leader.election.enable=false",
        f"offsets.topic.replication.factor={replicas}",
        "offsets.topic.num.partitions=10",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={min_isr}",
        "group.initial.rebalance.delay.ms=0",
        # A node that comes back catches up and takes its preferred partitions back within ~30 s.
        "leader.imbalance.check.interval.seconds=30",
        "auto.create.topics.enable=true",
        # As the single development broker: simulated history carries old event-time timestamps.
        "log.retention.check.interval.ms=31536000000",
        "log.cleaner.enable=false",
        "log.segment.bytes=268435456",
        "",
    ])


def _pid(cfg: ClusterConfig, node: int) -> int | None:
    return read_pid(cfg.pid_file(node), needle=str(cfg.properties(node)))


def _format(cfg: ClusterConfig, say: Callable[[str], None]) -> None:
    java = _require("java", "install Java 17 (apt-get install openjdk-17-jre-headless)")
    id_file = cfg.root / "cluster.id"
    if not id_file.exists():
        gen = subprocess.run([java, "-cp", f"{cfg.lib}/*", "kafka.tools.StorageTool", "random-uuid"],
                             capture_output=True, text=True, timeout=120)
        if gen.returncode != 0 or not gen.stdout.strip():
            raise InfraError(f"kafka StorageTool random-uuid failed:\n{gen.stdout}{gen.stderr}")
        cfg.root.mkdir(parents=True, exist_ok=True)
        id_file.write_text(gen.stdout.strip().splitlines()[-1] + "\n")
    uuid = id_file.read_text().strip()
    for n in cfg.nodes:
        cfg.logs(n).mkdir(parents=True, exist_ok=True)
        cfg.properties(n).write_text(node_properties(cfg, n))
        if (cfg.data(n) / "meta.properties").exists():
            continue
        say(f"formatting storage of node {n}...")
        cfg.data(n).mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([java, "-cp", f"{cfg.lib}/*", f"-Dlog4j.configuration=file:{LOG4J}",
                               f"-Dkafka.logs.dir={cfg.logs(n)}", "kafka.tools.StorageTool", "format", "-t", uuid,
                               "-c", str(cfg.properties(n))], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise InfraError(f"formatting node {n} failed: {proc.stdout}{proc.stderr}")


def node_start(cfg: ClusterConfig, node: int) -> int:
    """Start one node (formatted already) unless it runs; returns its pid. Does not wait for it to answer."""
    pid = _pid(cfg, node)
    if pid is not None:
        return pid
    for port in (cfg.broker_port(node), cfg.ctrl_port(node)):
        if port_open(port):
            raise InfraError(f"port {port} on 127.0.0.1 is taken by another process; stop it or set "
                             f"NOC_CLUSTER_PORT / NOC_CLUSTER_CONTROLLER_PORT to free ports")
    (cfg.data(node) / ".lock").unlink(missing_ok=True)  # left by a SIGKILL; no node of ours holds it
    java = _require("java", "install Java 17")
    cmd = [java, f"-Xms{cfg.heap}", f"-Xmx{cfg.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
           f"-Dlog4j.configuration=file:{LOG4J}", f"-Dkafka.logs.dir={cfg.logs(node)}",
           "-cp", f"{cfg.lib}/*", "kafka.Kafka", str(cfg.properties(node))]
    with (cfg.logs(node) / "stdout.log").open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    cfg.pid_file(node).write_text(f"{proc.pid}\n")
    return proc.pid


def node_kill(cfg: ClusterConfig, node: int) -> bool:
    """SIGKILL one node (a crash: no controlled shutdown). Returns whether it ran."""
    pid = _pid(cfg, node)
    if pid is None:
        return False
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the kernel to reap the killed JVM, bounded
    return True


def active_controller(cfg: ClusterConfig) -> int | None:
    """The KRaft quorum leader as the running nodes record it (the highest epoch wins). DescribeCluster cannot say:
    a broker answers it with any broker's id."""
    best: tuple[int, int] | None = None
    for n in cfg.nodes:
        if _pid(cfg, n) is None:
            continue
        try:
            state = json.loads((cfg.data(n) / "__cluster_metadata-0" / "quorum-state").read_text())
        except (FileNotFoundError, ValueError):
            continue
        leader, epoch = int(state.get("leaderId", -1)), int(state.get("leaderEpoch", -1))
        if leader >= 0 and (best is None or epoch > best[0]):
            best = (epoch, leader)
    return None if best is None else best[1]


@dataclass(frozen=True)
class ClusterState:
    brokers: list[int]  # node ids the cluster metadata lists
    controller: int | None  # the broker DescribeCluster names (see active_controller for the quorum leader)
    under_replicated: list[tuple[str, int]]  # (topic, partition) with fewer in-sync replicas than replicas
    offline: list[tuple[str, int]]  # (topic, partition) without a leader


def cluster_state(bootstrap: str, timeout: float = 5.0) -> ClusterState:
    from confluent_kafka.admin import AdminClient

    client = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000), "log_level": 2})
    md = client.list_topics(timeout=timeout)
    desc = client.describe_cluster(request_timeout=timeout).result(timeout=timeout)
    under, offline = [], []
    for name, t in sorted(md.topics.items()):
        for p, pm in sorted(t.partitions.items()):
            if pm.leader < 0:
                offline.append((name, p))
            if len(pm.isrs) < len(pm.replicas):
                under.append((name, p))
    controller = desc.controller.id if desc.controller is not None else None
    return ClusterState(sorted(md.brokers), controller, under, offline)


def partition_leaders(bootstrap: str, topics: list[str], timeout: float = 5.0) -> dict[tuple[str, int], int]:
    """(topic, partition) -> leader node id (-1: none)."""
    from confluent_kafka.admin import AdminClient

    client = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000), "log_level": 2})
    md = client.list_topics(timeout=timeout)
    return {(name, p): pm.leader for name in topics if name in md.topics
            for p, pm in md.topics[name].partitions.items()}


def _complete(cfg: ClusterConfig) -> bool:
    from confluent_kafka import KafkaException

    try:
        st = cluster_state(cfg.bootstrap, timeout=3.0)
    except (KafkaException, TimeoutError):  # nodes still starting: "not yet"
        return False
    return len(st.brokers) == cfg.brokers and st.controller is not None


def await_cluster(cfg: ClusterConfig, t0: float, timeout_s: float = START_TIMEOUT_S) -> float:
    """Poll until every node is registered and a controller is elected; raise with log tails on a dead node."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = [n for n in cfg.nodes if _pid(cfg, n) is None]
        if dead:
            raise InfraError(f"kafka node(s) {dead} exited while starting; last log lines:\n" + "\n".join(
                f"-- node {n}\n{tail(cfg.logs(n) / 'server.log')}\n{tail(cfg.logs(n) / 'stdout.log')}"
                for n in dead))
        if _complete(cfg):
            return time.monotonic() - t0
        time.sleep(0.5)  # polling the cluster's readiness, bounded by the deadline
    raise InfraError(f"the {cfg.brokers}-node cluster at {cfg.bootstrap} did not form within {timeout_s:.0f}s; "
                     f"logs under {cfg.root}")


def _quiet(_msg: str) -> None:
    pass


def cluster_up(cfg: ClusterConfig, jars_from: Settings | None = None, log: bool = True) -> float:
    """Start every node that is not running and wait for the cluster; returns seconds spent."""
    say: Callable[[str], None] = print if log else _quiet
    t0 = time.monotonic()
    with exclusive(cfg.root / "up.lock", timeout=LOCK_TIMEOUT_S):
        if all(_pid(cfg, n) is not None for n in cfg.nodes) and _complete(cfg):
            say(f"kafka cluster already running at {cfg.bootstrap}")
            return 0.0
        if jars_from is not None:
            kp = single_paths(jars_from)
            if not jars_ready(kp):
                say("fetching Kafka jars (first run only)...")
            with exclusive(kp.root / "up.lock", timeout=LOCK_TIMEOUT_S):
                fetch_jars(kp)
        if not any(cfg.lib.glob("kafka_*.jar")):
            raise InfraError(f"no Kafka jars in {cfg.lib}: run `noc infra up` once to fetch them")
        _format(cfg, say)
        started = [node_start(cfg, n) for n in cfg.nodes]
        try:
            took = await_cluster(cfg, t0)
        except InfraError:
            cluster_down(cfg)
            raise
        say(f"kafka cluster of {cfg.brokers} up at {cfg.bootstrap} in {took:.1f}s (pids {started}, under {cfg.root})")
        return took


def cluster_down(cfg: ClusterConfig) -> list[int]:
    """Stop every node cleanly (SIGTERM, SIGKILL after a timeout); returns the node ids that ran."""
    ran = []
    for n in cfg.nodes:
        pid = _pid(cfg, n)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            ran.append((n, pid))
    for n, pid in ran:
        stop_pid(pid, timeout=60)  # already signalled; waits, and kills what outlives the timeout
        cfg.pid_file(n).unlink(missing_ok=True)
    return [n for n, _ in ran]


def cluster_status(cfg: ClusterConfig) -> str:
    lines = []
    running = 0
    for n in cfg.nodes:
        pid = _pid(cfg, n)
        running += pid is not None
        state = f"pid {pid}" if pid is not None else "stopped"
        lines.append(f"  node {n}: 127.0.0.1:{cfg.broker_port(n)} (controller port {cfg.ctrl_port(n)}), {state}")
    if not running:
        return f"kafka cluster ({cfg.brokers} nodes, {cfg.root}): stopped\n" + "\n".join(lines)
    from confluent_kafka import KafkaException

    try:
        st = cluster_state(cfg.bootstrap)
    except (KafkaException, TimeoutError) as exc:
        return f"kafka cluster at {cfg.bootstrap}: {running}/{cfg.brokers} nodes running, not answering ({exc})\n" \
            + "\n".join(lines)
    head = (f"kafka cluster at {cfg.bootstrap}: {running}/{cfg.brokers} nodes running, brokers in metadata "
            f"{st.brokers}, active controller {active_controller(cfg)}, under-replicated partitions "
            f"{len(st.under_replicated)}, offline partitions {len(st.offline)}")
    extra = [f"  under-replicated: {t}[{p}]" for t, p in st.under_replicated[:20]]
    return "\n".join([head, *lines, *extra])
