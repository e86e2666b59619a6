"""The worker's site stage: SITE windows, baselines and statistical anomalies, keyed by site (the edge of
:mod:`streams.core.sites`).

* The pipeline's input loop forwards each PERSON window it emits, and each feed event announcing an alert or
  finding about a site alone (the site's correlation evidence), to the internal topic ``<ns>.noc-worker-sites``
  (6 partitions, keyed ``tenant:site``), then, per input partition whose clock moved, a clock marker to every
  partition of it (``forward``). Same producer, sent before the pipeline's state is committed: a crash
  re-forwards them (person window ids dedupe; clocks only move forward).
* :class:`SiteLoop` reads that topic in batches (librdkafka, group ``<ns>.noc-worker-sites``, a thread of its
  own; see :mod:`streams.batch_loop`) and calls :class:`SiteStage`; its state is a dict written through to the
  changelog ``<ns>.noc-worker-sites-changelog`` after the outputs were acknowledged, then the offsets are
  committed. Through Faust's per-message stream this stage alone cost ~35 µs per input record.
* The tickets agent calls :meth:`SiteEdge.ticket`: a ticket resolving an anomaly (``related_event_id``) as
  FALSE_POSITIVE / FRAUD_CONFIRMED becomes a feedback record to the anomaly's site.
* :func:`request_retune` (``noc baselines retune``) broadcasts an on-demand retune record.

A PERSON window is forwarded as its Avro bytes (the signal-windows record), site evidence as its feed event's
(noc_event). The other envelopes on the internal topic are orjson: ``{"k": "c", "p": partition, "c": clock}``,
``{"k": "e", "p": partition}`` (that person partition has no activity record at all),
``{"k": "f", ...ticket_feedback}``, ``{"k": "r", "tenant_id", "site_id", "at"}``; ``{"k": "w", "r": window}`` is
a window forwarded by an older worker, still read.

Configuration (tests, tuning): ``NOC_SITE_CONFIG`` = JSON ``{"baselines": {...BaselineConfig fields}}``;
unset: the defaults.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from schemas.serde import MAGIC, DecodeError, SchemaStore
from schemas.topics import PERSON_PARTITIONS, site_key
from streams.batch_loop import BatchLoop, ensure_changelog, ensure_topic
from streams.core.baselines import BaselineConfig
from streams.core.correlation import evidence_of
from streams.core.feed import FEED_STEM
from streams.core.sites import SiteConfig, SiteResult, SiteStage, StateStore, site_evidence, ticket_feedback
from streams.core.types import Out, Record

log = logging.getLogger("streams.sites")

SITE_PARTITIONS = PERSON_PARTITIONS
TIMEOUT_S = 10.0


def internal_topic(namespace: str) -> str:
    return f"{namespace}.noc-worker-sites"


def config_from_env(env: dict[str, str] | None = None) -> SiteConfig:
    raw = (env if env is not None else dict(os.environ)).get("NOC_SITE_CONFIG")
    if not raw:
        return SiteConfig()
    d = json.loads(raw)
    b = d.pop("baselines", {})
    if "metrics" in b:
        b["metrics"] = tuple(b["metrics"])
    return dataclasses.replace(SiteConfig(), baselines=BaselineConfig(**b), **d)


def ensure_site_topic(bootstrap: str, namespace: str) -> None:
    """The internal site topic (a week's retention: it is only read back by the worker)."""
    ensure_topic(bootstrap, internal_topic(namespace), SITE_PARTITIONS, {"retention.ms": str(7 * 24 * 3_600_000)})


def clock_envelope(partition: int, clock: int) -> bytes:
    return orjson.dumps({"k": "c", "p": partition, "c": clock})


def request_retune(bootstrap: str, namespace: str, tenant_id: int | None = None, site_id: str | None = None,
                   at_ms: int | None = None) -> int:
    """Ask the site stage to retune now (every partition; ``at`` default: each partition's watermark)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000, "message.timeout.ms": 30_000,
                  "acks": "all", "enable.idempotence": True})
    value = orjson.dumps({"k": "r", "tenant_id": tenant_id, "site_id": site_id, "at": at_ms})
    for q in range(SITE_PARTITIONS):
        p.produce(internal_topic(namespace), value, b"retune", partition=q)
    left = p.flush(30)
    if left:
        raise RuntimeError(f"{left} retune requests not delivered")
    return SITE_PARTITIONS


class SiteEdge:
    """The site stage of a worker (``streams.app.Worker``): forwards to the internal topic, and reads it back in
    batches (:class:`SiteLoop`, its own consumer group and changelog) into :class:`SiteStage`."""

    def __init__(self, worker: Any, cfg: SiteConfig | None = None, consume: bool = True) -> None:
        """``consume``: also read the internal topic here (:class:`SiteLoop`); False when another process (the
        worker's site-stage process, :mod:`streams.site_worker`) does."""
        self.worker = worker
        self.schemas: SchemaStore = worker.schemas
        s = worker.settings
        self.name = internal_topic(s.namespace)
        ensure_site_topic(s.bootstrap, s.namespace)
        self.stage = SiteStage(self._timezone, cfg or config_from_env())
        self._announced: set[int] = set()
        self.loop = SiteLoop(self, worker.site_sink, on_error=worker.loop_failed) if consume else None

    def _timezone(self, tenant: int, site: str) -> str:
        rec = self.worker.refs.sites.get((tenant, site))
        return str(rec.get("timezone") or "UTC") if rec else "UTC"

    # -- producing side (called from the pipeline and tickets agents) -------------------------------------

    def forward(self, outs: list[Out], encoded: list[bytes], clocks: dict[int, int],
                send: Callable[[str, bytes, bytes, int], None], empty: Iterable[int] = ()) -> None:
        """Queue the PERSON windows of a pipeline result, then its clock markers (delivered with the outputs).

        ``encoded``: each out's Avro bytes as produced to its topic; a window is forwarded as those bytes (a JSON
        envelope of its own was ~3% of the input thread). ``empty``: assigned person partitions without any
        activity record; announced once per process, they will never report a clock, so the site watermark
        must not wait for them."""
        for o, value in zip(outs, encoded, strict=True):
            if o.stem == "signal_window" and o.record.get("site_id") and o.record.get("scope") == "PERSON":
                send(self.name, site_key(int(o.record["tenant_id"]), str(o.record["site_id"])), value, -1)
            elif site_evidence(o) is not None:  # an alert or finding about a site alone: the stage correlates it
                send(self.name, site_key(int(o.record["tenant_id"]), str(o.record["site_id"])), value, -1)
        for p in sorted(set(empty) - self._announced):
            self._announced.add(p)
            for q in range(SITE_PARTITIONS):
                send(self.name, b"clock", orjson.dumps({"k": "e", "p": p}), q)
        for p, c in sorted(clocks.items()):
            value = clock_envelope(p, c)
            for q in range(SITE_PARTITIONS):
                send(self.name, b"clock", value, q)

    def ticket(self, rec: Record, broker_time_ms: int | None = None) -> bool:
        """Queue baseline feedback for a ticket that resolves an anomaly; True when one was queued.
        ``broker_time_ms``: the ticket record's Kafka timestamp (bounds the feedback's time)."""
        fb = ticket_feedback(rec, broker_time_ms)
        if fb is None:
            return False
        value = orjson.dumps({"k": "f", **fb})
        if fb["site_id"]:
            self.worker.sink.send(self.name, site_key(fb["tenant_id"], fb["site_id"]), value)
        else:  # no site on the ticket: every partition looks for the anomaly among its sites
            for q in range(SITE_PARTITIONS):
                self.worker.sink.send(self.name, b"feedback", value, q)
        return True

    # -- the consuming side ---------------------------------------------------------------------------------

    def apply(self, store: StateStore, q: int, value: bytes | None, res: SiteResult) -> None:
        st = self.stage
        if value is not None and value[:2] == MAGIC:  # a forwarded window or feed event, as produced
            try:
                stem, rec = self.schemas.decode(value)
                ev = site_evidence(Out("events", b"", stem, rec)) if stem == FEED_STEM else None
                if stem != "signal_window" and ev is None:
                    raise DecodeError("WRONG_SCHEMA", f"{stem} is neither a window nor site evidence")
                if ev is not None:
                    evidence_of(*ev)  # every field correlation reads is there (KeyError, TypeError otherwise)
            except (DecodeError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.warning("site stage: bad record on %s[%d] skipped: %s", self.name, q, exc)
                res.counts["bad"] += 1
                return
            if ev is not None:
                st.evidence(store, q, ev[0], ev[1], res)
            else:
                st.window(store, q, rec, res)
            return
        try:
            env = orjson.loads(value or b"")
            kind = env["k"]
            if kind == "w":
                st.window(store, q, env["r"], res)
            elif kind == "c":
                st.clock(store, q, int(env["p"]), int(env["c"]), res)
            elif kind == "e":
                st.empty(store, q, int(env["p"]), res)
            elif kind == "f":
                st.feedback(store, q, int(env["tenant_id"]), env.get("site_id"), str(env["anomaly_id"]),
                            env["verdict"], int(env["at"]), res)
            elif kind == "r":
                t = env.get("tenant_id")
                before = res.counts["retuned_sites"]
                st.retune(store, q, None if t is None else int(t), env.get("site_id"), env.get("at"), res)
                done = res.counts["retuned_sites"] - before
                if done:  # (the request goes to every partition; most hold none of one site)
                    scope = "every tenant" if t is None else f"tenant {t}" + (f" site {env['site_id']}"
                                                                             if env.get("site_id") else "")
                    log.info("site stage: on-demand retune (%s) on partition %d: %d site(s) retuned", scope, q, done)
            else:
                raise KeyError(kind)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            # Only this worker writes the topic: a bad envelope is a bug, logged and skipped, never a crash loop.
            log.warning("site stage: bad record on %s[%d] skipped: %s", self.name, q, exc)
            res.counts["bad"] += 1



class SiteLoop(BatchLoop):
    """The internal site topic, in batches, into the :class:`SiteStage`; state and offsets after each batch."""

    name = "sites"

    def __init__(self, edge: SiteEdge, sink: Any, on_error: Callable[[BaseException], None]) -> None:
        s = edge.worker.settings
        self.edge = edge
        changelog = f"{s.namespace}.noc-worker-sites-changelog"
        ensure_changelog(s.bootstrap, changelog, SITE_PARTITIONS)
        super().__init__(bootstrap=s.bootstrap, topics=[edge.name], group=sites_group(s.namespace),
                         changelog=changelog, sink=sink, on_error=on_error, batch_size=s.batch_size,
                         batch_within_s=s.batch_within_s, flush_every_s=s.flush_every_s,
                         flush_records=s.flush_records)
        # State changes of the batches since the last flush, serialised once at the flush (a site's baselines
        # were re-serialised per batch, the stage's largest cost). The stage reads its own decoded objects, not
        # the store, until it forgets them — and the loop flushes before any rebalance lets it forget.
        self.pending = SiteResult()

    def handle(self, batch: list[Any]) -> None:
        res = SiteResult()
        for m in batch:
            self.edge.apply(self.store, m.partition(), m.value(), res)
        self.edge.worker.produce(self.sink, res.outs)
        self.pending.writes.update(res.writes)
        self.edge.worker.counted(len(batch), res.counts)

    def flush(self) -> None:
        self.pending.commit(self.store)
        self.sink.deliver()

    def forget(self, partitions: set[int] | None) -> None:
        self.edge.stage.forget()  # rebuilt from the store for whatever partitions it holds
        self.pending = SiteResult()  # empty after a flush; after a lost assignment, not ours to write


def sites_group(namespace: str) -> str:
    return f"{namespace}.noc-worker-sites"


def site_stage_caught_up(bootstrap: str, namespace: str) -> bool:
    """True when the worker group has committed the internal site topic to its end (tests, scripts): every
    record forwarded so far was processed and its outputs delivered."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": sites_group(namespace), "enable.auto.commit": False,
                  "socket.timeout.ms": 10_000})
    try:
        name = internal_topic(namespace)
        tps = [TopicPartition(name, q) for q in range(SITE_PARTITIONS)]
        ends = {q: c.get_watermark_offsets(tp, timeout=TIMEOUT_S)[1] for q, tp in enumerate(tps)}
        committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=TIMEOUT_S)}
        return all(ends[q] == 0 or committed.get(q, -1) >= ends[q] for q in ends)
    finally:
        c.close()
