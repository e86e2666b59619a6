"""``noc replay``: re-run the sans-I/O pipeline over a time range of a namespace's inputs, into a sandbox.

Not through Faust: plain consumers read the range, and the same :class:`streams.core.pipeline.Pipeline` the
worker drives (state in a dict) runs over it in event-time steps (:mod:`streams.replay_buckets`) — the person
stage in one process per partition group (``--procs``, default one per core: :mod:`streams.replay_procs`), its
steps merged back in bucket and partition order, so any number of processes produces the same bytes as one.
This process then runs the site stage and the tickets over each step and produces the outputs to the sandbox
namespace's topics through a producer that refuses every other topic (:class:`streams.replay_io.SandboxProducer`).

Like the worker, the replay first reads the compacted reference topics and ``model-events`` whole (so every
input sees all reference data), then the inputs. No clock is read (FUTURE_EVENT is judged against each
record's ``received_at``), so the same range gives the same output whenever it is replayed.

State starts empty at ``--from``: baselines have no samples, duties begun earlier and incidents opened earlier
are unknown, and fraud features have no history, so outputs near the start differ from the live worker's.
``--warmup D`` first runs the inputs of ``[from - D, from)`` through the pipeline for their state only (their
outputs are dropped); with a warm-up reaching back to the start of the topics, the range's outputs are the ones
a replay of everything would produce for it.

What-if: with ``--model`` or ``--set``, the same merged input also drives a second pipeline with the live
configuration (in memory, not produced), and both are judged against the labels and ticket resolutions.
A manifest (range, source, configuration, counts, metrics) is written to ``$NOC_HOME/replays/<name>.json``
for ``noc replay diff``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from models.scoring import ModelCache
from schemas.serde import DecodeError, SchemaStore
from schemas.topics import LIVE_NAMESPACE, topic
from streams.core.pipeline import INPUT_STEMS, SPARSE, DictStore, Pipeline, PipelineConfig, References
from streams.core.sites import SiteResult, SiteStage
from streams.core.types import Out, Record
from streams.core.validate import contract_verdict, dead_letter_for_decode_error, dead_letter_for_verdict
from streams.replay_buckets import aligned, assign_groups, bucketed, width_for
from streams.replay_config import ReplayConfig, as_dict
from streams.replay_diff import Snapshot
from streams.replay_io import PartitionReader, ReplayError, SandboxProducer, Span, check_sandbox, consumer, offset_range
from streams.replay_merge import Item, merge
from streams.replay_metrics import Metrics, Truth, metrics
from streams.replay_procs import PersonStage, Step

INPUT_TOPICS: tuple[str, ...] = ("attendance", "activity", "alerts", "audit-findings", "tickets")
REFERENCE_TOPICS: tuple[str, ...] = ("ref.sites", "ref.people", "ref.shifts")
COMPONENT = "noc-replay"
# The pipeline holds attendance, alerts and findings until the activity clock (activity watermark - grace)
# passes them. The live worker gets there because activity keeps coming after the range; the replay reads
# this much activity past the range end (nothing else) so the range's last records are released as well.
CLOCK_TOPIC = "activity"
TAIL_MS = 10 * 60_000
TIME_FIELDS = ("occurred_at", "window_end", "updated_at", "issued_at", "escalated_at", "timestamp",
               "record_timestamp")


def out_time(record: Record, default: int) -> int:
    """The event time a replayed output is stamped with (so exports and diffs can seek by time)."""
    for name in TIME_FIELDS:
        v = record.get(name)
        if isinstance(v, int):
            return v
    return default


@dataclass
class Lane:
    """One configuration driven over the merged input: its pipeline, state, and what it produced."""

    name: str
    config: ReplayConfig
    pipeline: Pipeline
    store: DictStore = field(default_factory=DictStore)
    sites: SiteStage | None = None  # the worker's site stage (SITE windows, baselines), one partition in-process
    site_store: DictStore = field(default_factory=DictStore)
    site_empty: tuple[int, ...] = ()  # person partitions without activity in the range: they never report a clock
    snapshot: Snapshot = field(default_factory=Snapshot)
    outputs: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)


@dataclass
class ReplayReport:
    sandbox: str
    source: str
    from_ms: int
    to_ms: int
    config: ReplayConfig
    warmup_ms: int = 0
    procs: int = 1  # person-stage processes
    records_in: Counter[str] = field(default_factory=Counter)
    outputs: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    late: int = 0
    references: int = 0
    elapsed_s: float = 0.0
    topics_written: set[str] = field(default_factory=set)
    metrics: list[Metrics] = field(default_factory=list)

    @property
    def total_in(self) -> int:
        return sum(self.records_in.values())

    @property
    def rate(self) -> float:
        return self.total_in / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"sandbox": self.sandbox, "source": self.source, "from_ms": self.from_ms, "to_ms": self.to_ms,
                "warmup_ms": self.warmup_ms, "procs": self.procs,
                "config": as_dict(self.config), "records_in": dict(self.records_in), "outputs": dict(self.outputs),
                "dead_letters": dict(self.dead_letters), "late": self.late, "references": self.references,
                "elapsed_s": self.elapsed_s, "rate": self.rate, "topics_written": sorted(self.topics_written),
                "metrics": [m.to_dict() for m in self.metrics]}


class Progress:
    """A one-line progress bar on stderr: % of the time range, records read, records/s."""

    def __init__(self, out: TextIO | None, from_ms: int, to_ms: int, total: int, every_s: float = 0.5) -> None:
        self.out, self.from_ms, self.span, self.total = out, from_ms, max(1, to_ms - from_ms), max(1, total)
        self.every_s = every_s
        self.tty = bool(out is not None and out.isatty())
        self.t0 = self.last = time.monotonic()
        self.n = 0
        self.at = from_ms

    def tick(self, at_ms: int) -> None:
        self.advance(1, at_ms, self.n % 1024 == 1023)

    def advance(self, n: int, at_ms: int, due: bool = True) -> None:
        """``n`` more records read, the newest at ``at_ms``; reports when ``due`` and the interval passed."""
        self.n += n
        self.at = max(self.at, at_ms)
        if self.out is not None and due:
            now = time.monotonic()
            if now - self.last >= (self.every_s if self.tty else 5.0):
                self.last = now
                self.show(now)

    def show(self, now: float | None = None, end: str = "") -> None:
        if self.out is None:
            return
        now = now or time.monotonic()
        frac = min(1.0, max(0.0, (self.at - self.from_ms) / self.span))
        bar = "#" * int(frac * 30)
        rate = self.n / max(1e-9, now - self.t0)
        line = (f"[{bar:<30}] {frac * 100:5.1f}% of range  {self.n:,}/{self.total:,} records  "
                f"{rate:,.0f} rec/s")
        print(("\r" + line) if self.tty else line, end=end if self.tty else "\n", file=self.out, flush=True)

    def done(self) -> None:
        self.at = self.from_ms + self.span
        self.show(end="\n")


def live_models(bootstrap: str, source: str) -> ModelCache:
    """The models the live worker would hold: the source's model-events topic applied in full."""
    from models.reload import warm_up

    cache = ModelCache()
    c = consumer(bootstrap)
    try:
        spans = offset_range(c, "model-events", topic("model-events", source), None, None)
    finally:
        c.close()
    warm_up(cache, (item.value for item in _read_all(bootstrap, spans)))
    return cache


def registered_model(version: str, dsn: str) -> ModelCache:
    """A cache whose global model is ``version`` from the registry (every tenant scored with it)."""
    from models.registry import Registry, model_event_record
    from models.scoring import ModelLoadError

    row = Registry(dsn).get(version)
    if row is None:
        raise ReplayError(f"model {version!r} is not in the registry ({dsn.split('@')[-1]}); see `noc model list`")
    cache = ModelCache()
    event = model_event_record(row, "ACTIVATED", 0)
    event["tenant_id"] = None
    try:
        cache.apply(event)
    except ModelLoadError as exc:
        raise ReplayError(f"model {version}: {exc}") from exc
    return cache


def _read_all(bootstrap: str, spans: list[Span]) -> Iterator[Item]:
    with PartitionReader(bootstrap, spans) as r:
        for it in r.iterators():
            yield from it


def read_truth(bootstrap: str, source: str, from_ms: int, to_ms: int) -> Truth:
    """Labels of the range, and ticket resolutions from the range's start on (they come later)."""
    schemas = SchemaStore()
    truth = Truth()
    c = consumer(bootstrap)
    try:
        label_spans = offset_range(c, "labels", topic("labels", source), from_ms, to_ms)
        ticket_spans = offset_range(c, "tickets", topic("tickets", source), from_ms, None)
    finally:
        c.close()
    for item in _read_all(bootstrap, label_spans + ticket_spans):
        try:
            stem, rec = schemas.decode(item.value)
        except DecodeError:
            continue  # bad bytes are the worker's dead letters, not ground truth
        if stem == "label":
            truth.add_label(rec)
        elif stem == "ticket":
            truth.add_ticket(rec)
    return truth


@dataclass
class ReplayRequest:
    bootstrap: str
    source: str
    sandbox: str
    from_ms: int
    to_ms: int
    config: ReplayConfig = field(default_factory=ReplayConfig)
    topics: tuple[str, ...] = INPUT_TOPICS
    dsn: str | None = None  # the model registry, for --model
    compare_live: bool = True  # what-if: also run the live configuration and report both
    produce: bool = True
    tail_ms: int = TAIL_MS  # activity read past the range end, only to move the clock (see TAIL_MS)
    warmup_ms: int = 0  # inputs read before the range for their state only (see the module doc)
    procs: int = 0  # person-stage processes (0: one per core); the output does not depend on it
    manifest_dir: Path | None = None
    progress: TextIO | None = sys.stderr


def _validate(req: ReplayRequest) -> None:
    check_sandbox(req.sandbox, req.source)
    if req.to_ms <= req.from_ms:
        raise ReplayError("--to must be after --from")
    if req.warmup_ms < 0:
        raise ReplayError("--warmup must not be negative")
    if req.procs < 0:
        raise ReplayError("--procs must not be negative")
    unknown = [t for t in req.topics if t not in INPUT_TOPICS]
    if unknown:
        raise ReplayError(f"not replayable input topic(s): {', '.join(unknown)}; inputs are {', '.join(INPUT_TOPICS)}")
    held = [t for t in req.topics if t in INPUT_STEMS and t != CLOCK_TOPIC]
    if held and CLOCK_TOPIC not in req.topics:
        raise ReplayError(f"{', '.join(held)} wait for the pipeline's activity clock: add {CLOCK_TOPIC} to --topics")


def run_replay(req: ReplayRequest, producer_factory: Callable[[ReplayRequest], SandboxProducer] | None = None
               ) -> ReplayReport:
    """Replay ``req``'s range into its sandbox; returns the report (also written to the manifest)."""
    from infra.topics_admin import apply_topics

    _validate(req)
    t0 = time.monotonic()
    schemas = SchemaStore()
    refs = References()
    live_cache = live_models(req.bootstrap, req.source)
    main_cache = registered_model(req.config.model_version, req.dsn or _default_dsn()) \
        if req.config.model_version else live_cache

    def lane(name: str, cfg: ReplayConfig, cache: ModelCache) -> Lane:
        return Lane(name, cfg, Pipeline(refs, cache, _with_component(cfg.pipeline, COMPONENT), schemas),
                    sites=SiteStage(lambda t, s: str((refs.sites.get((t, s)) or {}).get("timezone") or "UTC"),
                                    cfg.sites))  # the worker's (NOC_SITE_CONFIG) unless --set baselines.*

    lanes = [lane(req.sandbox, req.config, main_cache)]
    if req.compare_live and not req.config.is_live:
        lanes.append(lane("live config", ReplayConfig(), live_cache))
    for ln in lanes:
        ln.snapshot = Snapshot(req.from_ms, req.to_ms)

    rep = ReplayReport(req.sandbox, req.source, req.from_ms, req.to_ms, req.config, req.warmup_ms)
    c = consumer(req.bootstrap)
    try:
        ref_spans = [s for short in REFERENCE_TOPICS
                     for s in offset_range(c, short, topic(short, req.source), None, None)]
        in_spans = [s for short in req.topics for s in offset_range(
            c, short, topic(short, req.source), req.from_ms - req.warmup_ms,
            req.to_ms + (req.tail_ms if short == CLOCK_TOPIC else 0))]
    finally:
        c.close()
    for item in _read_all(req.bootstrap, ref_spans):
        if lanes[0].pipeline.apply_reference(item.topic, item.value):
            rep.references += 1
    refs.mark_loaded()

    person_spans = [s for s in in_spans if s.topic in INPUT_STEMS]
    per_partition: Counter[int] = Counter()
    for s in person_spans:
        per_partition[s.partition] += s.count
    groups = assign_groups(dict(per_partition), req.procs or os.cpu_count() or 1)
    total = sum(s.count for s in in_spans)
    width = width_for(req.to_ms + req.tail_ms - (req.from_ms - req.warmup_ms), total)
    active = {s.partition for s in in_spans if s.topic == CLOCK_TOPIC and s.count > 0}
    for ln in lanes:
        ln.site_empty = tuple(p for p in range(ln.sites.cfg.sources if ln.sites else 0) if p not in active)
    bar = Progress(req.progress, req.from_ms - req.warmup_ms, req.to_ms, total)
    # Like the worker's consumer high-water marks: a sparse input partition with unread records in the range holds
    # that partition's clock (belt and braces with the merge's lead).
    highwater: dict[tuple[str, int], int | None] = {
        (s.topic, s.partition): s.end for s in in_spans if s.topic in SPARSE and s.count > 0}
    producer: SandboxProducer | None = None
    with PersonStage(req.bootstrap, person_spans, groups, [(ln.pipeline, ln.store) for ln in lanes], width,
                     req.source, highwater) as stage:
        rep.procs = stage.processes
        if req.produce:
            apply_topics(req.bootstrap, req.sandbox)
            producer = (producer_factory or _sandbox_producer)(req)
        with PartitionReader(req.bootstrap, [s for s in in_spans if s.topic not in INPUT_STEMS]) as tickets:
            _drive(req, stage.steps(), aligned([bucketed(it, width) for it in tickets.iterators()]), lanes,
                   producer, rep, bar, schemas)
    if producer is not None:
        producer.flush()
        rep.topics_written = set(producer.topics_written)
    bar.done()
    main = lanes[0]
    rep.outputs, rep.dead_letters, rep.late = main.outputs, main.dead_letters, main.dead_letters["LATE"]
    rep.elapsed_s = time.monotonic() - t0
    if not req.config.is_live or req.compare_live:
        truth = read_truth(req.bootstrap, req.source, req.from_ms, req.to_ms)
        rep.metrics = [metrics(ln.name, ln.snapshot, truth, ln.config.fraud_threshold) for ln in lanes]
    write_manifest(rep, req.manifest_dir)
    return rep


def _sandbox_producer(req: ReplayRequest) -> SandboxProducer:
    return SandboxProducer(req.bootstrap, req.sandbox, req.source)


def _with_component(cfg: PipelineConfig, component: str) -> PipelineConfig:
    import dataclasses

    return dataclasses.replace(cfg, component=component)


def _default_dsn() -> str:
    from infra.config import settings

    return settings().pg_dsn


def _drive(req: ReplayRequest, steps: Iterator[Step], tickets: Iterator[tuple[int, list[list[Item]]]],
           lanes: list[Lane], producer: SandboxProducer | None, rep: ReplayReport, bar: Progress,
           schemas: SchemaStore) -> None:
    """Per step, in bucket order: every lane's person outputs (by partition), what its site stage makes of them
    and of their clocks, then the step's tickets (baseline feedback, as the worker's tickets agent does)."""
    last_ts = req.from_ms
    for step, runs in _with_tickets(steps, tickets):
        items = list(merge(runs))
        rep.records_in.update(step.counts)
        n = sum(step.counts.values()) + len(items)
        if items:
            rep.records_in["tickets"] += len(items)
            last_ts = max(last_ts, max(i.timestamp for i in items))
        if step.max_ts is not None:
            last_ts = max(last_ts, step.max_ts)
        bar.advance(n, last_ts)
        for i, ln in enumerate(lanes):
            outs = [o for part in step.parts for o in part.lanes[i][0]]
            clocks = {part.partition: c for part in step.parts if (c := part.lanes[i][1]) is not None}
            outs += _site_outs(ln, outs, clocks)
            outs += _ticket_outs(items, req.source, schemas, ln)
            _deliver(ln, outs, producer if i == 0 else None, last_ts, req.from_ms)


def _with_tickets(steps: Iterator[Step], tickets: Iterator[tuple[int, list[list[Item]]]]
                  ) -> Iterator[tuple[Step, list[list[Item]]]]:
    """The person steps and the tickets' buckets together, bucket by bucket (an empty step where only tickets
    are, no tickets where there were none)."""
    step, tick = next(steps, None), next(tickets, None)
    while step is not None or tick is not None:
        if tick is None or (step is not None and step.bucket < tick[0]):
            assert step is not None
            yield step, []
            step = next(steps, None)
        elif step is None or tick[0] < step.bucket:
            yield Step(tick[0]), tick[1]
            tick = next(tickets, None)
        else:
            yield step, tick[1]
            step, tick = next(steps, None), next(tickets, None)


def _site_outs(ln: Lane, outs: list[Out], clocks: dict[int, int]) -> list[Out]:
    """What the worker's site agent makes of one pipeline result (see streams.core.sites)."""
    if ln.sites is None:
        return []
    res = ln.sites.run_person_outputs(ln.site_store, outs, clocks, empty=ln.site_empty)
    res.commit(ln.site_store)
    return res.outs


def _ticket_outs(items: Iterable[Item], source: str, schemas: SchemaStore, ln: Lane | None = None) -> list[Out]:
    """Dead letters of bad tickets; resolutions of anomalies go to the lane's site stage as feedback. Like the
    worker, no ticket_updated feed events: the ticket sink emits those once it accepted a change."""
    outs: list[Out] = []
    for item in items:
        try:
            _, rec = schemas.decode(item.value, expected="ticket")
        except DecodeError as err:
            outs.append(dead_letter_for_decode_error(
                err, source_topic=topic("tickets", source), partition=item.partition, offset=item.offset,
                component=COMPONENT, key=item.key, value=item.value, record_timestamp=item.timestamp))
            continue
        verdict = contract_verdict("ticket", rec, item.timestamp)  # as the worker's tickets agent judges it
        if verdict.reason is not None:
            outs.append(dead_letter_for_verdict(
                verdict, source_topic=topic("tickets", source), partition=item.partition, offset=item.offset,
                component=COMPONENT, key=item.key, value=item.value, record_timestamp=item.timestamp))
            continue
        if ln is not None and ln.sites is not None:
            res = SiteResult()
            ln.sites.ticket(ln.site_store, 0, rec, res, item.timestamp)
            res.commit(ln.site_store)
            outs.extend(res.outs)
    return outs


def _deliver(ln: Lane, outs: list[Out], producer: SandboxProducer | None, default_ts: int, start_ms: int) -> None:
    """Count, snapshot and produce the outputs of the range; those before ``start_ms`` (warm-up) are dropped."""
    enc = ln.pipeline.schemas.encode
    for out in outs:
        at = out_time(out.record, default_ts)
        if at < start_ms:
            continue
        ln.outputs[out.topic] += 1
        ln.snapshot.add_out(out.topic, out.record)
        if out.topic == "dead-letters":
            ln.dead_letters[out.record["reason"]] += 1
        if producer is not None:
            producer.produce(producer.name(out.topic), out.key, enc(out.stem, out.record), at)


# -- the manifest ----------------------------------------------------------------------------------------


def manifest_dir(override: Path | None = None) -> Path:
    if override is not None:
        return override
    from infra.config import settings

    return settings().home / "replays"


def write_manifest(rep: ReplayReport, directory: Path | None = None) -> Path:
    d = manifest_dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{rep.sandbox}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rep.to_dict(), indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def read_manifest(name: str, directory: Path | None = None) -> dict[str, Any] | None:
    path = manifest_dir(directory) / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


DIFF_MARGIN_MS = 24 * 3_600_000


def read_snapshot(bootstrap: str, namespace: str, from_ms: int, to_ms: int) -> Snapshot:
    """A namespace's anomalies, incidents, fraud scores and ticket commands whose event time is in the range.

    Reads from a day before ``from`` by record timestamp (replays stamp outputs with event time, the worker
    with the time it produced them, which is later) to the end, and filters on the records' event time.
    """
    from streams.replay_diff import KINDS, STEM_OF

    schemas = SchemaStore()
    snap = Snapshot(from_ms, to_ms)
    c = consumer(bootstrap)
    try:
        spans = [s for kind in KINDS for s in offset_range(c, kind, topic(kind, namespace),
                                                            from_ms - DIFF_MARGIN_MS, None)]
    finally:
        c.close()
    for item in _read_all(bootstrap, spans):
        try:
            _, rec = schemas.decode(item.value, expected=STEM_OF[item.topic])
        except DecodeError:
            continue  # not an output this namespace's pipeline wrote
        snap.add(item.topic, rec)
    return snap


def live_namespace() -> str:
    from infra.config import settings

    return settings().namespace or LIVE_NAMESPACE
