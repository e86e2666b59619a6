"""The Faust worker: thin agents that hand consumed bytes to the sans-I/O pipeline and produce its output.

* One agent (concurrency 1) reads the co-partitioned person-keyed inputs (attendance, activity, alerts,
  audit-findings) in micro-batches (``stream.take_events``) and calls :meth:`Pipeline.process`.
* A second agent reads ``tickets`` (keyed by ticket, not co-partitioned) for baseline feedback only (the
  ticket sink emits ``ticket_updated`` once its state machine accepted a change).
* A third agent (:mod:`streams.site_stage`) aggregates the PERSON windows by site into SITE windows, baselines
  and statistical anomalies, from a site-keyed internal topic the pipeline agent forwards to.
* All per-key state is in one Faust table (memory store + changelog topic). Faust restores it on start and
  rebalance; the worker writes it itself (in-memory store + changelog partition ``p`` for input partition
  ``p``); see :mod:`streams.core.pipeline` for the keys, the clock and the recovery design.
* Outputs and changelog writes go through one librdkafka producer (:class:`Sink`): Faust's per-record
  send futures were the bottleneck (about 1 ms per output here).
* Reference data and model events are read outside the consumer group by :class:`streams.refs.RefTail`.
* Raw bytes in and out (``value_serializer="raw"``); ``schemas.serde`` decodes and encodes.

At-least-once: per batch, outputs are produced and acknowledged, then the state changes (offset marker last)
are written to the changelog and acknowledged, and only then are the batch's events acked (Faust commits
acked offsets). Measured limit: Faust's per-message event machinery costs ~70 µs/record on this machine
even with ``take_events`` batching (see tests/bench/bench_worker.py). No exactly_once, no agent
concurrency > 1 (see the notes on Faust pitfalls).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.types import TP

from models.reload import on_model_event
from models.scoring import ModelCache
from schemas.serde import DecodeError, SchemaStore
from schemas.topics import BY_SHORT, topic
from streams.core.pipeline import INPUT_STEMS, SPARSE, Incoming, Pipeline, PipelineConfig, References, Result
from streams.core.types import Out
from streams.core.validate import dead_letter_for_decode_error
from streams.faust_acks import install as repair_duplicate_acks
from streams.metrics import WorkerMetrics
from streams.refs import RefTail
from streams.site_stage import SiteEdge

log = logging.getLogger("streams.worker")

OUTPUT_TOPICS = ("signal-windows", "baselines", "anomalies", "incidents", "fraud-scores", "ticket-commands",
                 "finding-escalations", "events", "dead-letters")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    bootstrap: str
    namespace: str
    metrics_port: int = 0  # 0: no HTTP endpoint
    batch_size: int = 10_000
    batch_within_s: float = 0.2
    data_dir: Path = Path(".cache/faust")
    component: str = "noc-worker"
    log_level: str = "info"
    max_cached_states: int = 100_000  # per partition, see PipelineConfig

    @property
    def app_id(self) -> str:
        # Prefixed by the namespace so the changelog topic lives (and is deleted) with the namespace.
        return f"{self.namespace}.noc-worker"


class Sink:
    """One confluent-kafka (librdkafka) producer for outputs and state changelog writes.

    Faust's own producer path (aiokafka, one awaited future per record) cost about a millisecond per output
    here; librdkafka batches in C. ``deliver()`` blocks until everything queued is acknowledged (a few ms per
    batch), which is what the at-least-once ordering needs: outputs acknowledged before the state is written,
    the state acknowledged before the batch is acked to Faust."""

    def __init__(self, bootstrap: str, timeout_s: float = 30.0) -> None:
        from confluent_kafka import Producer

        self.timeout_s = timeout_s
        self.errors: list[str] = []
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "client.id": "noc-worker",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            "message.timeout.ms": int(timeout_s * 1000),
            "socket.timeout.ms": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            # One client-wide callback, called for failures only: a per-record callback cost ~1.5 µs each.
            "on_delivery": self._failed,
            "delivery.report.only.error": True,
        })
        self.produce = self.producer.produce

    def _failed(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")

    def send(self, name: str, key: bytes | None, value: bytes | None, partition: int = -1) -> None:
        """-1: the partitioner chooses (librdkafka's RD_KAFKA_PARTITION_UA)."""
        while True:
            try:
                self.produce(name, value, key, partition)
                return
            except BufferError:
                self.producer.poll(0.05)

    def deliver(self) -> None:
        left = self.producer.flush(self.timeout_s)
        if left or self.errors:
            errors, self.errors = self.errors, []
            raise RuntimeError(f"could not deliver {left} records: {errors[:5]}")  # crash: redelivery redoes it


class TableStore:
    """The pipeline's :class:`Store` over a Faust table with raw bytes keys and orjson values.

    Writes go to the table's in-memory store and straight to its changelog topic, partition named by the
    pipeline (the state of input partition ``p`` lives in changelog partition ``p``), through the
    :class:`Sink`. Faust restores the table from that changelog as usual (raw key, raw value).
    """

    def __init__(self, table: Any, sink: Sink, changelog: str) -> None:
        self.table = table
        self.sink = sink
        self.changelog = changelog

    @property
    def data(self) -> Any:
        # The memory store's own dict: the Store mapping's get/setitem wrappers cost more than the lookup.
        return self.table.data.data

    def get(self, key: str) -> Any:
        raw = self.table.data.data.get(key.encode())
        return None if raw is None else orjson.loads(raw)

    def put(self, partition: int, key: str, value: Any) -> None:
        k, v = key.encode(), orjson.dumps(value)
        # orjson's bytes keep its whole output buffer (~8 KB even for a 1 KB value); the table holds a
        # right-sized copy (about 8x less memory for the table; the same bytes).
        self.table.data.data[k] = bytes(memoryview(v))
        self.sink.send(self.changelog, k, v, partition)

    def delete(self, partition: int, key: str) -> None:
        k = key.encode()
        self.data.pop(k, None)
        self.sink.send(self.changelog, k, None, partition)

    def keys(self) -> Iterable[str]:
        return [k.decode() for k in list(self.data.keys())]


class Worker:
    """Everything one worker process holds: the Faust app, the pipeline, the reference tail, metrics."""

    def __init__(self, settings: WorkerSettings, config: PipelineConfig | None = None) -> None:
        self.settings = settings
        s = settings
        self.schemas = SchemaStore()
        self.models = ModelCache()
        self.refs = References()
        self.pipeline = Pipeline(self.refs, self.models, config or PipelineConfig(component=s.component,
                                                                 max_cached_states=s.max_cached_states),
                                 self.schemas, timer=time.perf_counter)
        self.metrics = WorkerMetrics()
        # Faust can count an offset twice after a rebalance seek and then commit one offset per second
        # (streams.faust_acks): dedupe before each commit, logged and counted.
        repair_duplicate_acks(lambda _tp, n: self.metrics.duplicate_acks.inc(n))
        self.app = faust.App(
            s.app_id,
            broker=f"kafka://{s.bootstrap}",
            store="memory://",
            datadir=str(s.data_dir / s.namespace),
            autodiscover=False,
            web_enabled=False,
            key_serializer="raw",
            value_serializer="raw",
            processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest",
            topic_partitions=BY_SHORT["attendance"].partitions,
            topic_replication_factor=1,
            topic_allow_declare=True,
            broker_commit_every=10_000,
            broker_commit_interval=1.0,
            stream_buffer_maxsize=16_384,
            producer_linger_ms=5,
            producer_max_request_size=4_000_000,
            table_standby_replicas=0,
            # A killed worker's partitions move to the survivors after this long (Faust's default is 60 s).
            broker_session_timeout=10.0,
            broker_heartbeat_interval=2.0,
            logging_config=None,
        )
        self.short_of = {topic(short, s.namespace): short for short in [*list(INPUT_STEMS), "tickets"]}
        self.inputs = self.app.topic(*(topic(short, s.namespace) for short in INPUT_STEMS),
                                     key_type=bytes, value_type=bytes)
        self.tickets = self.app.topic(topic("tickets", s.namespace), key_serializer="raw", value_serializer="raw")
        self.table = self.app.Table("state", default=None, partitions=BY_SHORT["attendance"].partitions,
                                    key_type=bytes, value_type=bytes)
        self.sink = Sink(s.bootstrap)
        self.out_names = {short: topic(short, s.namespace) for short in OUTPUT_TOPICS}
        self.store = TableStore(self.table, self.sink, self.table.changelog_topic.get_topic_name())
        self.next_offset: dict[TP, int] = {}
        self.ref_tail = RefTail(s.bootstrap, s.namespace, self._apply_ref)
        self.app.agent(self.inputs, name="pipeline", concurrency=1)(self._pipeline_agent)
        self.app.agent(self.tickets, name="tickets", concurrency=1)(self._tickets_agent)
        self.sites = SiteEdge(self)  # SITE windows, baselines, statistical anomalies (streams.site_stage)
        self._stale = True
        self.lock = asyncio.Lock()  # the agent and the tick timer share the pipeline's state
        self.app.timer(2.0)(self._report_lag)
        self.app.timer(1.0)(self._tick)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]  # faust stub shape

    # -- reference data ------------------------------------------------------------------------------

    def _apply_ref(self, short: str, key: bytes | None, value: bytes | None) -> None:
        if short == "model-events":
            outcome = on_model_event(self.models, value)
            if outcome.error:
                log.warning("model event not applied: %s", outcome.error)
            elif outcome.changed:
                log.info("model for tenant %s is now %s", outcome.tenant_id, outcome.model_version)
            return
        if not self.pipeline.apply_reference(short, value):
            log.warning("undecodable record on %s (key %r) ignored", short, key)

    def load_references(self) -> int:
        n = self.ref_tail.load()
        self.refs.mark_loaded()
        self.ref_tail.start()
        return n

    # -- agents ----------------------------------------------------------------------------------------

    async def _on_revoked(self, sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        self.pipeline.forget_partitions()  # indexes are rebuilt from the table for whatever comes back

    async def _pipeline_agent(self, stream: Any) -> None:
        async for events in stream.take_events(self.settings.batch_size, within=self.settings.batch_within_s):
            t0 = time.perf_counter()
            batch = []
            for ev in events:
                m = ev.message
                batch.append(Incoming(self.short_of[m.topic], m.partition, m.offset, m.key, m.value,
                                      round(m.timestamp * 1000)))
                self.next_offset[TP(m.topic, m.partition)] = m.offset + 1
            async with self.lock:
                self._busy_rebalancing()  # events only flow once recovery is done; this resets stale indexes
                result = self.pipeline.process(self.store, batch, int(time.time() * 1000), self.settings.namespace,
                                               self._highwaters({inc.partition for inc in batch}))
                await self._deliver(result)
            self._count(result, time.perf_counter() - t0)

    async def _deliver(self, result: Result) -> None:
        """Outputs first (awaited), then the state (offset marker last, awaited); the caller acks after."""
        self.sites.forward(result.outs, result.clocks)  # PERSON windows + clock markers to the site stage
        await self._produce(result.outs)
        result.commit()
        self.sink.deliver()

    def _highwaters(self, partitions: set[int]) -> dict[tuple[str, int], int | None]:
        """End offsets the consumer knows for the sparse inputs of these partitions (None: not fetched yet)."""
        consumer = self.app.consumer
        assigned = consumer.assignment()
        out: dict[tuple[str, int], int | None] = {}
        for short in SPARSE:
            name = topic(short, self.settings.namespace)
            for p in partitions:
                tp = TP(name, p)
                if tp in assigned:
                    out[(short, p)] = consumer.highwater(tp)
        return out

    def _busy_rebalancing(self) -> bool:
        """True while partitions move or tables recover: the table is then incomplete and must not be read."""
        recovery: Any = self.app.tables.recovery  # type: ignore[attr-defined]  # not on the TableManagerT stub
        if self.app.rebalancing or recovery.in_recovery or not recovery.completed.is_set():
            self._stale = True
            return True
        if self._stale:  # first use after a rebalance: rebuild the in-memory indexes from the recovered table
            self.pipeline.forget_partitions()
            self._stale = False
        return False

    async def _tick(self) -> None:
        """Move partition clocks held by a sparse input that has since caught up (no new records needed)."""
        if self._busy_rebalancing():
            return
        partitions = {tp.partition for tp in self.app.consumer.assignment()
                      if tp.topic == topic("activity", self.settings.namespace)}
        if not partitions:
            return
        async with self.lock:
            result = self.pipeline.tick(self.store, partitions, self._highwaters(partitions))
            await self._deliver(result)
        self._count(result, 0.0)

    async def _tickets_agent(self, stream: Any) -> None:
        ns = self.settings.namespace
        async for events in stream.take_events(self.settings.batch_size, within=self.settings.batch_within_s):
            outs: list[Out] = []
            for ev in events:
                m = ev.message
                self.metrics.events.labels("tickets").inc()
                try:
                    _, rec = self.schemas.decode(m.value, expected="ticket")
                except DecodeError as err:
                    outs.append(dead_letter_for_decode_error(
                        err, source_topic=topic("tickets", ns), partition=m.partition, offset=m.offset,
                        component=self.settings.component, key=m.key, value=m.value,
                        record_timestamp=round(m.timestamp * 1000)))
                    self.metrics.dead_letters.labels(err.reason).inc()
                    continue
                # Baseline feedback only: the ticket sink emits ticket_updated once it accepted the change.
                self.sites.ticket(rec)
            await self._produce(outs)
            self.sink.deliver()

    async def _produce(self, outs: list[Out]) -> None:
        """Encode and send; wait until all are acknowledged."""
        encode, send, names = self.schemas.encode, self.sink.send, self.out_names
        counts: Counter[str] = Counter()
        for out in outs:
            send(names[out.topic], out.key, encode(out.stem, out.record))
            counts[out.topic] += 1
        if outs:
            self.sink.deliver()
        for short, n in counts.items():
            self.metrics.outputs.labels(short).inc(n)

    def _count(self, r: Result, seconds: float) -> None:
        m = self.metrics
        for t, n in r.processed.items():
            m.events.labels(t).inc(n)
        for reason, n in r.dead_letters.items():
            m.dead_letters.labels(reason).inc(n)
        m.late.inc(r.late)
        m.redelivered.inc(r.skipped)
        m.predictions.inc(r.scored)
        if r.scored and r.score_seconds:
            per = r.score_seconds / r.scored
            for _ in range(r.scored):
                m.prediction_latency.observe(per)
        m.fraud_detections.inc(r.fraud_detections)
        m.fraud_tickets.inc(r.fraud_tickets)
        if seconds > 0:
            m.batch_seconds.observe(seconds)

    async def _report_lag(self) -> None:
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic not in self.short_of:
                continue
            high = consumer.highwater(tp)
            if high is None:
                continue
            nxt = self.next_offset.get(tp)
            if nxt is None:  # nothing consumed yet on this partition: the backlog is everything not yet read
                continue
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - nxt))


def run(settings: WorkerSettings) -> int:
    """Load reference data, start the metrics endpoint, run the Faust worker until stopped."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    (settings.data_dir / settings.namespace).mkdir(parents=True, exist_ok=True)
    worker = Worker(settings)
    n = worker.load_references()
    log.info("reference data loaded: %d records", n)
    if settings.metrics_port:
        worker.metrics.serve(settings.metrics_port)
    fw = faust.Worker(worker.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    try:
        fw.execute_from_commandline()
    finally:
        worker.ref_tail.stop()
    return 0


def worker_command(namespace: str, bootstrap: str | None = None, metrics_port: int = 0,
                   extra: Iterable[str] = ()) -> list[str]:
    """The command line that starts a worker as a subprocess (used by the demo and the tests)."""
    cmd = [sys.executable, "-m", "streams.cli", "worker", "--namespace", namespace]
    if bootstrap:
        cmd += ["--bootstrap", bootstrap]
    if metrics_port:
        cmd += ["--metrics-port", str(metrics_port)]
    return cmd + list(extra)


def worker_env(home: str | os.PathLike[str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if home is not None:
        env["NOC_HOME"] = str(home)
    return env
