"""A real Apache Kafka 3.9 broker in KRaft mode, assembled from Maven Central jars.

``kafka_up`` fetches the jars once (``mvn dependency:copy-dependencies`` on ``infra/kafka/pom.xml``),
formats the storage once, starts one combined broker/controller on 127.0.0.1 and waits until it
answers. Everything lives under ``$NOC_HOME/kafka``: ``lib/``, ``data/``, ``logs/``, ``kafka.pid``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.config import REPO_ROOT, Settings
from infra.procs import InfraError, exclusive, port_open, read_pid, stop_pid, tail

POM = REPO_ROOT / "infra" / "kafka" / "pom.xml"
LOG4J = REPO_ROOT / "infra" / "kafka" / "log4j.properties"
START_TIMEOUT_S = 90.0
# Covers a first run's jar fetch by a concurrent `up` (parallel test sessions).
LOCK_TIMEOUT_S = 1200.0


@dataclass(frozen=True)
class KafkaPaths:
    root: Path

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def lib_ok(self) -> Path:
        return self.root / "lib.complete"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def pid(self) -> Path:
        return self.root / "kafka.pid"

    @property
    def stdout(self) -> Path:
        return self.logs / "stdout.log"


def paths(s: Settings) -> KafkaPaths:
    return KafkaPaths(s.home / "kafka")


def server_properties(s: Settings, data_dir: Path) -> str:
    p, c = s.kafka_port, s.kafka_controller_port
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{c}",
        f"listeners=PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{p}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data_dir}",
        "num.partitions=6",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=10",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "group.initial.rebalance.delay.ms=0",
        # Faust creates its changelog/repartition topics itself; auto-create stays on for it.
        "auto.create.topics.enable=true",
        # A development broker: simulated history carries event-time timestamps from any date, so time-based
        # retention (and the segment rolls that old timestamps trigger, which let the cleaner compact) would delete
        # or compact records while a test or a demo still reads them. Retention is never enforced and the
        # cleaner is off here; a production cluster keeps the catalogue's retention and compaction.
        "log.retention.check.interval.ms=31536000000",
        "log.cleaner.enable=false",
        "log.segment.bytes=268435456",
        "",
    ])


def _java_cp(kp: KafkaPaths) -> str:
    return f"{kp.lib}/*"


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise InfraError(f"`{tool}` not found: {hint} (infra/bootstrap.sh installs it on Debian)")
    return path


def pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def jars_ready(kp: KafkaPaths) -> bool:
    """The marker, written after a complete copy, names the pom it came from: a changed pom fetches again."""
    try:
        return kp.lib_ok.read_text().strip() == pom_digest()
    except FileNotFoundError:
        return False


def fetch_jars(kp: KafkaPaths) -> bool:
    """Copy Kafka and its runtime dependencies from Maven Central once. Returns True when it fetched."""
    if jars_ready(kp):
        return False
    mvn = _require("mvn", "install Maven (apt-get install maven)")
    _require("java", "install Java 17 (apt-get install openjdk-17-jre-headless)")
    # Copy into a fresh directory and swap it in whole, so an interrupted copy or a version bump never
    # leaves a mixed classpath behind.
    fresh = kp.root / "lib.tmp"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    proc = subprocess.run([mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", "-DincludeScope=runtime",
                           f"-DoutputDirectory={fresh}"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise InfraError(f"Maven could not fetch the Kafka jars (network? proxy? ~/.m2/settings.xml?):\n"
                         f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    kp.lib_ok.unlink(missing_ok=True)
    if kp.lib.is_symlink():
        kp.lib.unlink()
    else:
        shutil.rmtree(kp.lib, ignore_errors=True)
    fresh.rename(kp.lib)
    kp.lib_ok.write_text(pom_digest() + "\n")
    return True


def _format(s: Settings, kp: KafkaPaths, say: Callable[[str], None]) -> None:
    java = _require("java", "install Java 17 (apt-get install openjdk-17-jre-headless)")
    kp.properties.write_text(server_properties(s, kp.data))
    if (kp.data / "meta.properties").exists():
        return
    say("formatting Kafka storage (first run only)...")
    kp.data.mkdir(parents=True, exist_ok=True)
    gen = subprocess.run([java, "-cp", _java_cp(kp), "kafka.tools.StorageTool", "random-uuid"],
                         capture_output=True, text=True, timeout=120)
    if gen.returncode != 0 or not gen.stdout.strip():
        raise InfraError(f"kafka StorageTool random-uuid failed (are the jars in {kp.lib} complete? delete "
                         f"{kp.lib_ok} to fetch them again):\n{gen.stdout}{gen.stderr}")
    uuid = gen.stdout.strip().splitlines()[-1]
    proc = subprocess.run([java, "-cp", _java_cp(kp), f"-Dlog4j.configuration=file:{LOG4J}",
                           f"-Dkafka.logs.dir={kp.logs}", "kafka.tools.StorageTool", "format", "-t", uuid,
                           "-c", str(kp.properties)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise InfraError(f"formatting Kafka storage failed: {proc.stdout}{proc.stderr}")


def _answers(bootstrap: str, timeout: float = 3.0) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    # log_level 2: readiness polling expects "connection refused" and must not print it each time.
    client = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000), "log_level": 2})
    try:
        return len(client.list_topics(timeout=timeout).brokers) > 0
    except KafkaException:
        return False


def kafka_pid(s: Settings) -> int | None:
    """The pid of our broker, or None (no pid file, process gone, or the pid now names something else)."""
    return read_pid(paths(s).pid, needle="kafka.Kafka")


def _answering(bootstrap: str, timeout: float = 3.0) -> bool:
    # A cheap TCP probe first: the AdminClient waits out its whole timeout on a closed port.
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return port_open(int(port), host or "127.0.0.1") and _answers(bootstrap, timeout)


def _await(s: Settings, kp: KafkaPaths, t0: float, exited: Callable[[], int | None]) -> float:
    """Poll until the broker answers; raise with the log tail when it exits or the deadline passes."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        code = exited()
        if code is not None:
            raise InfraError(f"kafka exited with {code} while starting; last log lines:\n"
                             f"{tail(kp.logs / 'server.log')}\n{tail(kp.stdout)}")
        if _answering(s.bootstrap, timeout=2.0):
            return time.monotonic() - t0
        time.sleep(0.5)  # polling the broker's readiness, bounded by the deadline
    raise InfraError(f"kafka did not answer at {s.bootstrap} within {START_TIMEOUT_S:.0f}s; last log lines:\n"
                     f"{tail(kp.logs / 'server.log')}\nIf it hangs: `noc infra down`, then `noc infra up`.")


def _quiet(_msg: str) -> None:
    pass


def kafka_up(s: Settings, log: bool = True) -> float:
    """Start the broker unless it runs already; return seconds spent. Raises InfraError with advice."""
    t0 = time.monotonic()
    kp = paths(s)
    say: Callable[[str], None] = print if log else _quiet
    if _answering(s.bootstrap):
        pid = kafka_pid(s)
        # With no pid of ours, NOC_BOOTSTRAP points elsewhere or the pid file was lost; a broker answers anyway.
        say(f"kafka already running at {s.bootstrap}" + (f" (pid {pid})" if pid else ""))
        return 0.0
    with exclusive(kp.root / "up.lock", timeout=LOCK_TIMEOUT_S):
        if _answering(s.bootstrap):  # another `up` started it while we waited for the lock
            say(f"kafka already running at {s.bootstrap}")
            return 0.0
        pid = kafka_pid(s)
        if pid is not None:
            # Our broker runs but does not answer yet: still starting (or hung); do not start a second one.
            say(f"kafka (pid {pid}) is starting; waiting for it...")
            took = _await(s, kp, t0, lambda: None if kafka_pid(s) == pid else -1)
            say(f"kafka up at {s.bootstrap} in {took:.1f}s (pid {pid})")
            return took
        kp.pid.unlink(missing_ok=True)  # stale: the process is gone or the pid was recycled
        for port in (s.kafka_port, s.kafka_controller_port):
            if port_open(port):
                raise InfraError(f"port {port} on 127.0.0.1 is taken by another process; stop it or set "
                                 f"NOC_KAFKA_PORT / NOC_KAFKA_CONTROLLER_PORT to free ports")
        if not jars_ready(kp):
            say("fetching Kafka jars (first run only)...")
        fetch_jars(kp)
        kp.logs.mkdir(parents=True, exist_ok=True)
        _format(s, kp, say)
        # A broker killed with SIGKILL leaves .lock behind; no broker of ours holds it any more.
        (kp.data / ".lock").unlink(missing_ok=True)
        java = _require("java", "install Java 17")
        cmd = [java, "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-Djava.awt.headless=true",
               f"-Dlog4j.configuration=file:{LOG4J}", f"-Dkafka.logs.dir={kp.logs}",
               "-cp", _java_cp(kp), "kafka.Kafka", str(kp.properties)]
        with kp.stdout.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        kp.pid.write_text(f"{proc.pid}\n")
        try:
            took = _await(s, kp, t0, proc.poll)
        except InfraError:
            stop_pid(proc.pid)
            kp.pid.unlink(missing_ok=True)
            raise
        say(f"kafka up at {s.bootstrap} in {took:.1f}s (pid {proc.pid}, logs {kp.logs})")
        return took


def kafka_down(s: Settings) -> bool:
    """Stop the broker cleanly (SIGTERM, then SIGKILL after a timeout). Returns whether one ran."""
    kp = paths(s)
    pid = kafka_pid(s)
    if pid is None:
        kp.pid.unlink(missing_ok=True)
        return False
    stop_pid(pid, timeout=60)
    kp.pid.unlink(missing_ok=True)
    return True


def kafka_status(s: Settings) -> str:
    pid = kafka_pid(s)
    if pid is None:
        return f"kafka: running at {s.bootstrap} (not ours)" if _answering(s.bootstrap) else "kafka: stopped"
    state = "running" if _answering(s.bootstrap) else "starting or unresponsive"
    return f"kafka: {state} at {s.bootstrap} (pid {pid}, logs {paths(s).logs})"
