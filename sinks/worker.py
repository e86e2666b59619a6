"""The sink worker: a confluent-kafka consumer in a group, batching into Postgres, at-least-once + idempotent.

Order of effects per batch: (1) write every row in one Postgres transaction and commit, (2) publish the
feed events and dead letters it produced (stable ids, so a repeat is harmless), (3) commit the batch's
exact offsets. A crash anywhere before (3) redelivers the batch, and the upserts absorb it.

While Postgres is unreachable the worker pauses its partitions and retries the same batch with backoff,
never skipping a record. The in-memory batch is bounded (BatchPolicy.max_records); consumption stops while a
batch is written. On a rebalance the batch is flushed before the partitions go; if that fails, it is
dropped uncommitted (the new owner reads it again).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from infra.group_lag import group_lag
from schemas.serde import encode
from schemas.topics import topic as topic_name
from sinks import metrics
from sinks.admission import REFERENCE_CHECKED, Admission, SiteDirectory
from sinks.batching import Backoff, BatchPolicy, next_offsets
from sinks.health import SinkHealth
from sinks.migrate import connect, migrate
from sinks.partitions import prune
from sinks.routes import SUNK_TOPICS, Prepared, Raw, prepare
from sinks.writer import SinkFatal, Writer, WriteResult, one_line, write_batch
from streams.core.ids import tenant_key

log = logging.getLogger("noc.sink")
KAFKA_TIMEOUT_S = 10.0
PAUSE_AFTER_S = 1.0  # a batch write taking longer than this pauses the partitions until it is done
REVOKE_WAIT_S = 15.0  # how long a rebalance or shutdown waits for Postgres before dropping the batch
MAX_PUBLISHED_BYTES = 900_000  # below the producer's and the broker's default record size limits (~1 MB)
REFUSED_ATTEMPTS = 5  # a batch Postgres refuses for a reason no record explains (permissions, a missing table)


@dataclass
class SinkConfig:
    dsn: str
    bootstrap: str
    namespace: str = "noc"
    topics: tuple[str, ...] = SUNK_TOPICS
    group: str = "noc-sink"
    policy: BatchPolicy = field(default_factory=BatchPolicy)
    backoff: Backoff = field(default_factory=Backoff)
    until_caught_up: bool = False  # stop once every assigned partition is read and committed to its end
    max_idle_s: float | None = None  # stop after this long without a record
    metrics_port: int | None = None
    run_migrations: bool = True
    instance_id: str | None = None  # static group membership: a restarted worker takes its partitions back at once
    publish: bool = True  # produce ticket_updated feed events and dead letters to Kafka
    prune_every_s: float | None = None  # drop partitions past retention this often (wall clock); None = never
    retention_days: dict[str, int] = field(default_factory=dict)  # per-table overrides of partitions.PARTITIONED
    check_references: bool = True  # dead-letter inputs of tenants and sites ref.sites does not know (as the worker)


@dataclass
class RunStats:
    records: int = 0
    batches: int = 0
    rows: int = 0
    dead: int = 0
    feed: int = 0
    db_retries: int = 0
    seconds: float = 0.0
    decode_s: float = 0.0  # decoding and mapping batches (main thread)
    wait_s: float = 0.0  # main thread waiting for the writer thread
    write_s: float = 0.0  # writer thread: Postgres transactions


class SinkWorker:
    def __init__(self, cfg: SinkConfig) -> None:
        self.cfg = cfg
        self.stats = RunStats()
        self.writer = Writer(cfg.dsn)
        self.buf: list[Raw] = []
        self.first_at = 0.0
        self.stopping = False
        self.health = SinkHealth(cfg.dsn)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-writer")
        self.inflight: tuple[Future[WriteResult | None], list[Raw]] | None = None
        self._give_up = threading.Event()
        self._short = {topic_name(s, cfg.namespace): s for s in cfg.topics}
        self.sites = (SiteDirectory(cfg.bootstrap, cfg.namespace)
                      if cfg.check_references and REFERENCE_CHECKED.intersection(cfg.topics) else None)
        self.admit = Admission(self.sites.refs if self.sites is not None else None)
        conf: dict[str, Any] = {
            "bootstrap.servers": cfg.bootstrap, "group.id": cfg.group, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": "earliest", "session.timeout.ms": 10_000,
            "max.poll.interval.ms": 600_000, "queued.max.messages.kbytes": 32_768, "statistics.interval.ms": 5_000,
            "stats_cb": self._on_stats, "socket.timeout.ms": 10_000,
        }
        if cfg.instance_id:
            conf["group.instance.id"] = cfg.instance_id
        self.consumer = Consumer(conf)
        self.admin = AdminClient({"bootstrap.servers": cfg.bootstrap, "socket.timeout.ms": 10_000})
        self.producer = Producer({"bootstrap.servers": cfg.bootstrap, "enable.idempotence": True, "acks": "all",
                                  "linger.ms": 5, "message.timeout.ms": 30_000}) if cfg.publish else None

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self, _sig: int | None = None, _frame: FrameType | None = None) -> None:
        self.stopping = True

    def run(self) -> RunStats:
        t0 = time.monotonic()
        if self.cfg.run_migrations:
            migrate(self.cfg.dsn)
        if self.cfg.metrics_port:  # /metrics, /healthz, /readyz (sinks.health)
            self.health.serve(self.cfg.metrics_port)
        if self.sites is not None:
            self.sites.load()
        self.consumer.subscribe(list(self._short), on_assign=self._on_assign, on_revoke=self._on_revoke)
        last_record = time.monotonic()
        next_prune = time.monotonic()
        try:
            while not self.stopping:
                self.health.heartbeat.beat()
                if self.cfg.prune_every_s is not None and time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + self.cfg.prune_every_s
                    self._prune()
                age = (time.monotonic() - self.first_at) * 1000 if self.buf else 0.0
                room = self.cfg.policy.room(len(self.buf))
                msgs = self.consumer.consume(num_messages=min(room, 1000), timeout=self.cfg.policy.wait_ms(
                    len(self.buf), age) / 1000) if room else []
                got = self._take(msgs)
                if got:
                    last_record = time.monotonic()
                age = (time.monotonic() - self.first_at) * 1000 if self.buf else 0.0
                if self.cfg.policy.due(len(self.buf), age):
                    self.flush()
                if self.inflight is not None and (not got or self.inflight[0].done()):
                    self._complete()  # commit a written batch now rather than at the next flush
                if got or self.buf:
                    continue
                idle = time.monotonic() - last_record
                if self.cfg.max_idle_s is not None and idle >= self.cfg.max_idle_s:
                    log.info("idle for %.1fs: stopping", idle)
                    break
                if self.cfg.until_caught_up and self.caught_up():
                    log.info("caught up: stopping")
                    break
            self.drain(give_up_after_s=REVOKE_WAIT_S)
        finally:
            self.buf = []  # only non-empty when leaving on an error: uncommitted, so redelivered
            self._give_up.set()
            self.pool.shutdown(wait=True)
            self.inflight = None
            self.consumer.close()
            if self.sites is not None:
                self.sites.close()
            if self.producer is not None:
                self.producer.flush(KAFKA_TIMEOUT_S)
            self.writer.close()
            self.stats.seconds = time.monotonic() - t0
        return self.stats

    def _take(self, msgs: list[Message]) -> int:
        n = 0
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            if not self.buf:
                self.first_at = time.monotonic()
            topic = m.topic() or ""
            self.buf.append(Raw(self._short[topic], topic, m.partition() or 0, m.offset() or 0, m.key(), m.value(),
                                m.timestamp()[1]))
            n += 1
        self.stats.records += n
        return n

    # -- the batch -------------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand the current batch to the writer thread, after completing the one in flight.

        Decoding the next batch overlaps with Postgres writing the previous one; at most one batch is in
        flight and one is accumulating, and offsets are committed in batch order.
        """
        if not self.buf:
            return
        batch, self.buf = self.buf, []
        t = time.perf_counter()
        if self.sites is not None:
            self.sites.poll()
        prep = prepare(batch, admit=self.admit)
        self.stats.decode_s += time.perf_counter() - t
        self._complete()
        self.inflight = (self.pool.submit(self._write_with_retry, batch, prep), batch)

    def drain(self, give_up_after_s: float | None = None) -> None:
        """Write and commit everything taken so far. With a limit (rebalance, shutdown), a batch still not
        written when it expires (Postgres down) is dropped uncommitted: whoever reads next gets it again.
        Records after a dropped batch are dropped too, so no later offset is committed past it."""
        if not self._complete(give_up_after_s):
            self.buf = []
            return
        self.flush()
        self._complete(give_up_after_s)

    def _complete(self, give_up_after_s: float | None = None) -> bool:
        """Wait for the batch in flight, then publish its feed events and commit its offsets.

        Returns False when the batch was dropped uncommitted (only with ``give_up_after_s``)."""
        if self.inflight is None:
            return True
        fut, batch = self.inflight
        self.inflight = None
        t = time.perf_counter()
        paused = False
        try:
            while True:
                try:
                    res = fut.result(timeout=PAUSE_AFTER_S)
                    break
                except FutureTimeout:
                    self.health.heartbeat.beat()  # alive: waiting for Postgres on purpose
                    if not paused:  # Postgres is slow or down: stop fetching (librdkafka's prefetch too)
                        paused = self._pause(True)
                    if give_up_after_s is not None and time.perf_counter() - t >= give_up_after_s:
                        self._give_up.set()
                        res = fut.result()
                        break
        finally:
            self._give_up.clear()
            if paused:
                self._pause(False)
            self.stats.wait_s += time.perf_counter() - t
        if res is None:
            log.warning("batch of %d records dropped uncommitted (it will be redelivered)", len(batch))
            return False
        self._publish(res)
        self._commit(batch)
        self.stats.batches += 1
        self.stats.write_s += res.seconds
        metrics.BATCHES.inc()
        log.debug("batch of %d records committed in %.3fs", len(batch), res.seconds)
        for name, n in res.rows.items():
            self.stats.rows += n
            metrics.ROWS.labels(name).inc(n)
        self.stats.dead += len(res.dead)
        for d in res.dead:
            metrics.DEAD.labels(d["reason"]).inc()
        return True

    def _write_with_retry(self, batch: list[Raw], prep: Prepared) -> WriteResult | None:
        """Runs in the writer thread: retry while Postgres is unreachable; None when told to give up.

        A record Postgres rejects never gets here (write_batch dead-letters it). An error that blames no
        record (a permission, a missing table) is retried REFUSED_ATTEMPTS times, then SinkFatal stops the
        process with the batch uncommitted."""
        attempt = 0
        refused = 0
        while True:
            try:
                with metrics.FLUSH.time():
                    return write_batch(self.writer, batch, prep)
            except SinkFatal:
                raise
            except psycopg.OperationalError as exc:
                attempt += 1
                self.stats.db_retries += 1
                metrics.RETRIES.inc()
                if self._give_up.is_set():
                    return None
                delay = self.cfg.backoff.delay(attempt)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("postgres unavailable, batch of %d waits (attempt %d, retry in %.1fs): %s", len(batch),
                            attempt, delay, first)
                self._give_up.wait(delay)  # backoff between reconnects; returns early when told to give up
            except psycopg.Error as exc:
                refused += 1
                self.writer.close()
                if refused >= REFUSED_ATTEMPTS:
                    raise SinkFatal(f"postgres refused a batch of {len(batch)} records {refused} times for a reason "
                                    f"no record explains: {one_line(exc)}; stopping without committing it") from exc
                delay = self.cfg.backoff.delay(refused)
                log.warning("postgres refused a batch of %d (attempt %d, retry in %.1fs): %s", len(batch),
                            refused, delay, one_line(exc))
                if self._give_up.wait(delay):
                    return None

    def _publish(self, res: WriteResult) -> None:
        """Produce the batch's feed events and dead letters; retried until delivered (ids are stable)."""
        if self.producer is None or not (res.feed or res.dead):
            return
        attempt = 0
        while True:
            errors: list[str] = []

            def done(err: Any, _msg: Any, errors: list[str] = errors) -> None:
                if err is not None:
                    errors.append(str(err))

            events = topic_name("events", self.cfg.namespace)
            for ev in res.feed:
                value = encode("noc_event", ev)
                if len(value) > MAX_PUBLISHED_BYTES:  # the ticket change itself is stored; only its notice is lost
                    log.error("ticket_updated %s not published: %d bytes is more than a record may have",
                              ev["event_id"], len(value))
                    continue
                self.producer.produce(events, key=tenant_key(ev["tenant_id"]), value=value,
                                      timestamp=ev["timestamp"], on_delivery=done)
            dlq = topic_name("dead-letters", self.cfg.namespace)
            for d in res.dead:
                if d["source_topic"] != dlq:  # a broken dead letter is stored, not sent round again
                    self.producer.produce(dlq, key=d["source_topic"].encode(), value=publishable_dead_letter(d),
                                          on_delivery=done)
            left = self.producer.flush(KAFKA_TIMEOUT_S * 3)
            if left == 0 and not errors:
                self.stats.feed += len(res.feed)
                return
            attempt += 1
            log.warning("publishing feed events failed (attempt %d): %s", attempt, errors or f"{left} undelivered")
            time.sleep(self.cfg.backoff.delay(attempt))  # backoff before producing the same events again

    def _commit(self, batch: list[Raw]) -> None:
        offsets = next_offsets((r.topic, r.partition, r.offset) for r in batch)
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self.consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            # Lost the partitions meanwhile: the new owner re-reads the batch and the upserts absorb it.
            log.warning("offset commit failed (batch will be redelivered, harmlessly): %s", exc)

    # -- callbacks -------------------------------------------------------------------------------

    def _prune(self) -> None:
        try:
            with connect(self.cfg.dsn, autocommit=True) as conn:
                dropped = prune(conn, datetime.now(UTC), self.cfg.retention_days)
        except psycopg.OperationalError as exc:
            log.warning("retention skipped, postgres unavailable: %s", exc)
            return
        if dropped:
            log.info("retention dropped %d partitions: %s", len(dropped), ", ".join(dropped))

    def _pause(self, pause: bool) -> bool:
        try:
            assignment = self.consumer.assignment()
            if assignment:
                (self.consumer.pause if pause else self.consumer.resume)(assignment)
        except KafkaException as exc:
            log.warning("could not %s the partitions: %s", "pause" if pause else "resume", exc)
            return False
        if pause:
            log.info("waiting for postgres: consumption paused")
        return True

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions assigned: %d", len(partitions))
        self.health.assigned = True

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("partitions revoked (%d): flushing the batch first", len(partitions))
        self.health.assigned = False
        self.drain(give_up_after_s=REVOKE_WAIT_S)

    def _on_stats(self, stats_json: str) -> None:
        metrics.record_lag(metrics.lag_from_stats(stats_json))

    def caught_up(self) -> bool:
        """The group, not only this member, has committed every partition of its topics to the current end (also
        refreshes the lag gauge). After a crash a dead member holds its partitions until its session times out
        (or it comes back, with static membership): judging by the own assignment stopped a survivor with the
        dead member's share unwritten. A never-committed partition counts from its log start (retention may have
        emptied it); an error (e.g. a leader still being elected) just means "not yet". See infra.group_lag.
        """
        try:
            lags = group_lag(self.admin, self.cfg.group, self._short, KAFKA_TIMEOUT_S)
        except (KafkaException, TimeoutError) as exc:
            log.debug("group offsets not available yet: %s", exc)
            return False
        for (name, p), n in lags.items():
            metrics.LAG.labels(name, str(p)).set(n)
        return bool(lags) and not any(lags.values())


def publishable_dead_letter(d: dict[str, Any]) -> bytes:
    """The encoded dead letter for the topic. Its Postgres row keeps the original bytes; when they would make
    the record larger than the broker takes, the topic's copy goes without them (the detail says so)."""
    value = encode("dead_letter", d)
    if len(value) <= MAX_PUBLISHED_BYTES:
        return value
    size = len(d["value"] or b"") + len(d["key"] or b"")
    detail = f"{d['detail'][:1500]} [original key and value ({size} bytes) omitted here: in Postgres dead_letters]"
    return encode("dead_letter", {**d, "key": None, "value": None, "detail": detail})


def install_signal_handlers(worker: SinkWorker) -> None:
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)


def run_sink(cfg: SinkConfig) -> RunStats:
    """Run one sink worker until stopped (SIGTERM/SIGINT) or, with the options, caught up / idle."""
    worker = SinkWorker(cfg)
    install_signal_handlers(worker)
    return worker.run()
