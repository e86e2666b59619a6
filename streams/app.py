"""The worker: the pipeline and the site stage on librdkafka batch loops (two processes), the tickets agent on Faust.

* :class:`streams.input_loop.InputLoop` (a thread) reads the co-partitioned person-keyed inputs (attendance,
  activity, alerts, audit-findings) in batches, in its own consumer group (``<ns>.noc-worker-pipeline``, range
  assignor), and calls :meth:`Pipeline.process`; its state is a dict written through to a compacted changelog
  and restored from it on assignment. Through Faust's per-message Stream/Event path the same work cost
  ~70 µs more per record (a no-op Faust agent topped out near 12k records/s).
* :class:`streams.site_stage.SiteLoop` (the same base) aggregates the PERSON windows by site into SITE windows,
  baselines and statistical anomalies, from a site-keyed internal topic the input loop forwards to. It runs in
  a child process (:mod:`streams.site_worker`, ``--stage sites``) that this one starts and supervises, so the
  two pure-Python stages use two cores instead of sharing one through the GIL.
* The Faust app runs the ``tickets`` agent (keyed by ticket, not co-partitioned), for baseline feedback only
  (the ticket sink emits ``ticket_updated`` once its state machine accepted a change), and hosts the process.
* Outputs and changelog writes go through librdkafka producers (:class:`Sink`), one per producing thread.
* Reference data and model events are read outside the consumer groups by :class:`streams.refs.RefTail`.

At-least-once: a batch's outputs are produced and acknowledged; every ``flush_every_s`` (or ``flush_records``)
the state changes (offset marker last) are written and acknowledged, and only then are the input offsets
committed. A thread that fails stops the process with exit code 1 (a restart redelivers). No exactly_once,
no Faust agent concurrency > 1 (see the notes on Faust pitfalls).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from infra.topics_admin import replication_for
from models.reload import on_model_event
from models.scoring import ModelCache
from schemas.serde import DecodeError, SchemaStore
from schemas.topics import BY_SHORT, topic
from streams.core.pipeline import Pipeline, PipelineConfig, References, Result
from streams.core.types import Out
from streams.core.validate import contract_verdict, dead_letter_for_decode_error, dead_letter_for_verdict
from streams.faust_acks import install as repair_duplicate_acks
from streams.health import serve_worker_probes
from streams.input_loop import InputLoop
from streams.metrics import WorkerMetrics
from streams.producer import OUTPUT_TOPICS, Sink, send_outputs
from streams.refs import RefTail
from streams.site_stage import SiteEdge
from streams.site_worker import SiteProcess

log = logging.getLogger("streams.worker")



@dataclass(frozen=True, slots=True)
class WorkerSettings:
    bootstrap: str
    namespace: str
    metrics_port: int = 0  # 0: no HTTP endpoint
    batch_size: int = 5_000
    batch_within_s: float = 0.2
    flush_every_s: float = 2.0  # state flush + offset commit cadence (also every flush_records records)
    flush_records: int = 50_000
    data_dir: Path = Path(".cache/faust")
    component: str = "noc-worker"
    log_level: str = "info"
    max_cached_states: int = 100_000  # per partition, see PipelineConfig
    # "all": the pipeline here and the site stage in a child process (streams.site_worker); "pipeline": only
    # the pipeline (the site stage runs elsewhere, ``noc worker --stage sites``).
    stage: str = "all"

    @property
    def app_id(self) -> str:
        # Prefixed by the namespace so the changelog topic lives (and is deleted) with the namespace.
        return f"{self.namespace}.noc-worker"


class Worker:
    """Everything one worker process holds: the Faust app, the input loop, the pipeline, references, metrics."""

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
        self.failed: BaseException | None = None
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
            # Faust's own topics (its assignor's) replicated as the catalogue's are on this cluster.
            topic_replication_factor=replication_for(s.bootstrap).replication_factor,
            producer_acks=-1,  # acks=all; Faust's aiokafka producer has no idempotence setting
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
        self.tickets = self.app.topic(topic("tickets", s.namespace), key_serializer="raw", value_serializer="raw")
        # One producer per thread that produces (each flushes only what it queued): the Faust loop's (tickets),
        # the input loop's and the site loop's.
        self.sink = Sink(s.bootstrap)
        self.input_sink = Sink(s.bootstrap)
        self.out_names = {short: topic(short, s.namespace) for short in OUTPUT_TOPICS}
        self.ref_tail = RefTail(s.bootstrap, s.namespace, self._apply_ref)
        self.app.agent(self.tickets, name="tickets", concurrency=1)(self._tickets_agent)
        # The site stage (SITE windows, baselines, statistical anomalies) consumes in its own process; this one
        # forwards person windows and clocks to it, and ticket feedback.
        self.sites = SiteEdge(self, consume=False)
        self.inputs = InputLoop(bootstrap=s.bootstrap, namespace=s.namespace, pipeline=self.pipeline,
                                sink=self.input_sink, deliver=self._deliver, flush=self._flush, count=self._count,
                                on_error=self.loop_failed, batch_size=s.batch_size,
                                batch_within_s=s.batch_within_s, flush_every_s=s.flush_every_s,
                                flush_records=s.flush_records,
                                lag=lambda t, p, n: self.metrics.lag.labels(t, str(p)).set(n))
        self.store = self.inputs.store
        self.inputs.timed = self.metrics.loop_timing

    # -- reference data ------------------------------------------------------------------------------

    def _apply_ref(self, short: str, key: bytes | None, value: bytes | None) -> None:
        if short == "model-events":
            outcome = on_model_event(self.models, value)
            if outcome.error:
                log.warning("model event not applied: %s", outcome.error)
            elif outcome.changed:
                log.info("model for tenant %s is now %s", outcome.tenant_id, outcome.model_version)
                self.metrics.set_models(self.models.versions(), self.models.rules.model_version)
            return
        if not self.pipeline.apply_reference(short, value):
            log.warning("undecodable or out-of-contract record on %s (key %r) ignored", short, key)

    def load_references(self) -> int:
        n = self.ref_tail.load()
        self.refs.mark_loaded()
        self.metrics.set_models(self.models.versions(), self.models.rules.model_version)
        self.ref_tail.start()
        return n

    # -- the input thread ------------------------------------------------------------------------------

    def _deliver(self, result: Result) -> None:
        """A batch's outputs (and site-stage forwards), sent at once; :meth:`_flush` waits for their
        acknowledgements before it writes the state. (Waiting after every batch left the input thread idle for a
        round trip per batch.)"""
        sink = self.input_sink
        encoded: list[bytes] = []
        self.produce(sink, result.outs, wait=False, encoded=encoded)
        self.sites.forward(result.outs, encoded, result.clocks, sink.send, self.inputs.empty_activity_partitions())

    def _flush(self) -> None:
        """Every output sent since the last flush acknowledged, then the state changes of those batches (offset
        marker last), acknowledged; the input loop commits the input offsets after."""
        self.input_sink.deliver()
        self.pipeline.commit()
        self.input_sink.deliver()

    def loop_failed(self, exc: BaseException) -> None:
        """A consuming thread died: stop the whole worker with a failure (a restart redelivers)."""
        self.failed = exc
        os.kill(os.getpid(), signal.SIGTERM)

    # -- the tickets agent (Faust) -----------------------------------------------------------------------

    async def _tickets_agent(self, stream: Any) -> None:
        ns = self.settings.namespace
        async for events in stream.take_events(self.settings.batch_size, within=self.settings.batch_within_s):
            outs: list[Out] = []
            for ev in events:
                m = ev.message
                self.metrics.events.labels("tickets").inc()
                ts = round(m.timestamp * 1000)
                try:
                    _, rec = self.schemas.decode(m.value, expected="ticket")
                except DecodeError as err:
                    outs.append(dead_letter_for_decode_error(
                        err, source_topic=topic("tickets", ns), partition=m.partition, offset=m.offset,
                        component=self.settings.component, key=m.key, value=m.value, record_timestamp=ts))
                    self.metrics.dead_letters.labels(err.reason).inc()
                    continue
                verdict = contract_verdict("ticket", rec, ts)
                if verdict.reason is not None:
                    outs.append(dead_letter_for_verdict(
                        verdict, source_topic=topic("tickets", ns), partition=m.partition, offset=m.offset,
                        component=self.settings.component, key=m.key, value=m.value, record_timestamp=ts))
                    self.metrics.dead_letters.labels(verdict.reason).inc()
                    continue
                # Baseline feedback only: the ticket sink emits ticket_updated once it accepted the change.
                self.sites.ticket(rec, ts)
            self.produce(self.sink, outs, wait=False)
            self.sink.deliver()  # the dead letters and the site feedback sent above, in one wait

    def produce(self, sink: Sink, outs: list[Out], wait: bool = True, encoded: list[bytes] | None = None) -> None:
        """Encode and send; ``wait``: until all are acknowledged; ``encoded``: gets the bytes of each out."""
        for short, n in send_outputs(sink, self.schemas, self.out_names, outs, wait, encoded).items():
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


def run(settings: WorkerSettings) -> int:
    """Load reference data, start the metrics endpoint, run the Faust worker until stopped."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    (settings.data_dir / settings.namespace).mkdir(parents=True, exist_ok=True)
    worker = Worker(settings)
    n = worker.load_references()
    log.info("reference data loaded: %d records", n)
    fw = faust.Worker(worker.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    site_process: SiteProcess | None = None
    if settings.metrics_port:  # /metrics, /healthz and /readyz (streams.health)
        serve_worker_probes(settings.metrics_port, worker.metrics.registry, worker.inputs, lambda: True,
                            None if settings.stage != "all" else
                            lambda: site_process is not None and site_process.proc is not None
                            and site_process.proc.poll() is None)
    if settings.stage == "all":
        s = settings
        site_process = SiteProcess(
            worker_command(s.namespace, s.bootstrap, s.metrics_port + 1 if s.metrics_port else 0, [
                "--stage", "sites", "--batch-size", str(s.batch_size), "--batch-within", str(s.batch_within_s),
                "--flush-every", str(s.flush_every_s), "--flush-records", str(s.flush_records),
                "--log-level", s.log_level]),
            on_exit=lambda code: worker.loop_failed(RuntimeError(f"the site stage process exited with code {code}")))
        site_process.start()
    worker.inputs.start()
    try:
        fw.execute_from_commandline()
    except SystemExit as exc:  # Faust exits when it stops; the input thread's failure decides the code
        if worker.failed is None and exc.code not in (0, None):
            raise
    finally:
        worker.inputs.stop()
        if site_process is not None:
            site_process.stop()
        worker.ref_tail.stop()
    if worker.failed is not None:
        log.error("worker stopped because a loop failed: %r", worker.failed)
        return 1
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
