"""The site stage in a process of its own (``noc worker --stage sites``).

Why a process: the pipeline and the site stage are both pure Python, so as two threads of one process they
shared one core through the GIL (the site stage took ~15% of it, and the pipeline waited for it). The site stage
was already a separate consumer group (``<ns>.noc-worker-sites``) over its own internal topic with its own
changelog, so it runs here unchanged; ``noc worker`` (``--stage all``, the default) starts this process beside
the pipeline and supervises it (:class:`SiteProcess`). Operators who run the stages separately start
``--stage pipeline`` and ``--stage sites`` themselves, as many of each as they like: Kafka's group protocol
shares the partitions.

This module imports no Faust: the process needs the site core, a producer and the ref.sites topic (timezones).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from schemas import contract
from schemas.serde import DecodeError, SchemaStore
from schemas.topics import topic
from streams.batch_loop import LIBC
from streams.core.types import Out, Record
from streams.health import serve_worker_probes
from streams.metrics import WorkerMetrics
from streams.producer import OUTPUT_TOPICS, Sink, send_outputs
from streams.refs import RefTail
from streams.site_stage import SiteEdge

log = logging.getLogger("streams.site_worker")

PARENT_ENV = "NOC_WORKER_PARENT_PID"
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class SiteSettings:
    bootstrap: str
    namespace: str
    batch_size: int = 5_000
    batch_within_s: float = 0.2
    flush_every_s: float = 2.0
    flush_records: int = 50_000
    metrics_port: int = 0  # 0: no HTTP endpoint


class _Sites:
    """Latest ref.sites record per (tenant, site): the timezones the baselines need."""

    def __init__(self) -> None:
        self.sites: dict[tuple[int, str], Record] = {}


class SiteWorker:
    """What :class:`SiteEdge` needs from a worker, without the pipeline."""

    def __init__(self, settings: SiteSettings) -> None:
        self.settings = settings
        self.schemas = SchemaStore()
        self.refs = _Sites()
        self.failed: BaseException | None = None
        self.stopped = threading.Event()
        self.site_sink = Sink(settings.bootstrap)
        self.out_names = {short: topic(short, settings.namespace) for short in OUTPUT_TOPICS}
        self.outputs: Counter[str] = Counter()
        self.metrics = WorkerMetrics()
        self.ref_tail = RefTail(settings.bootstrap, settings.namespace, self._apply_ref)
        self.edge = SiteEdge(self)

    def _apply_ref(self, short: str, key: bytes | None, value: bytes | None) -> None:
        if short != "ref.sites" or value is None:
            return
        try:
            _, rec = self.schemas.decode(value, expected="site")
        except DecodeError as err:
            log.warning("undecodable ref.sites record (key %r) ignored: %s", key, err)
            return
        bad = contract.check("site", rec, None)
        if bad is not None:  # the pipeline does not apply it either (Pipeline.apply_reference)
            log.warning("out-of-contract ref.sites record (key %r) ignored: %s", key, bad.detail)
            return
        self.refs.sites[(int(rec["tenant_id"]), str(rec["site_id"]))] = rec

    def produce(self, sink: Sink, outs: list[Out]) -> None:
        counts = send_outputs(sink, self.schemas, self.out_names, outs)
        self.outputs.update(counts)
        for short, n in counts.items():
            self.metrics.outputs.labels(short).inc(n)

    def counted(self, records: int, counts: Counter[str]) -> None:
        """A batch of the internal topic was applied: ``counts`` by outcome (SiteEdge.apply)."""
        self.metrics.events.labels("sites").inc(records)
        for kind, n in counts.items():
            self.metrics.site_records.labels(kind).inc(n)

    def serve_metrics(self) -> None:
        port = self.settings.metrics_port
        if not port:
            return
        try:  # /metrics, /healthz and /readyz (streams.health)
            serve_worker_probes(port, self.metrics.registry, self.edge.loop, lambda: True)
        except OSError as exc:  # the stage runs on; its metrics are not worth a crash loop of the worker
            log.error("site stage: metrics not served on port %d: %s", port, exc)

    def loop_failed(self, exc: BaseException) -> None:
        self.failed = exc
        self.stopped.set()

    def run(self) -> int:
        n = self.ref_tail.load()
        self.ref_tail.start()
        self.serve_metrics()
        log.info("site stage: %d reference records loaded", n)
        loop = self.edge.loop
        assert loop is not None
        loop.timed = self.metrics.loop_timing
        loop.start()
        try:
            self.stopped.wait()
        finally:
            loop.stop()
            self.ref_tail.stop()
        if self.failed is not None:
            log.error("site stage stopped because its loop failed: %r", self.failed)
            return 1
        log.info("site stage stopped; outputs %s", dict(self.outputs))
        return 0


def die_with_parent() -> None:
    """When started by a worker (``NOC_WORKER_PARENT_PID``): be killed when it dies, even by SIGKILL, so a
    crashed worker leaves no orphan consuming in its group. Linux only; a no-op elsewhere."""
    parent = os.environ.get(PARENT_ENV)
    if not parent:
        return
    prctl = getattr(LIBC, "prctl", None)
    if prctl is None:
        return
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(1)


def run_sites(settings: SiteSettings) -> int:
    die_with_parent()
    worker = SiteWorker(settings)

    def stop(signum: int, frame: Any) -> None:
        worker.stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return worker.run()


class SiteProcess:
    """The worker's site-stage child: started with the worker's settings, stopped with it; if it exits on its own
    the worker is told (``on_exit``) and stops too, with a failure (a restart redelivers)."""

    def __init__(self, command: Sequence[str], on_exit: Callable[[int], None]) -> None:
        self.command = list(command)
        self.on_exit = on_exit
        self.stopping = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.watcher = threading.Thread(target=self._watch, name="noc-site-process", daemon=True)

    def start(self) -> None:
        env = dict(os.environ)
        env[PARENT_ENV] = str(os.getpid())
        self.proc = subprocess.Popen(self.command, env=env)  # logs go where the worker's go
        log.info("site stage process started (pid %d)", self.proc.pid)
        self.watcher.start()

    def _watch(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        if not self.stopping:
            log.error("site stage process exited with code %s", code)
            self.on_exit(code)

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stopping = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout_s)
