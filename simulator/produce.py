"""The Kafka edge: encode the generator's records and produce them, as fast as asked.

One confluent-kafka ``Producer`` (idempotent, acks=all, lz4, 20 ms linger). Only failed deliveries call
back (``delivery.report.only.error``), so the hot loop pays nothing per success; every failure is counted
per topic and the run fails if any delivery failed or a message is still queued when the final flush
times out. Kafka record timestamps are the records' event times by default, so consumers can seek by
event time (``offsets_for_times``).

Live (``live=True``): a record is produced once the wall clock has reached both its stream time and its Kafka
timestamp, so nothing produced is stamped in the future (brokers may reject such records:
``message.timestamp.after.max.ms``). A world starting in the past is thus back-filled as fast as ``rate``
allows up to now, and carries on in real time after that.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from schemas.topics import topic
from simulator.config import SimConfig
from simulator.encoding import Encoder, encoders
from simulator.generate import STEM, TOPICS, SimRecord, SimStats, Simulation

# Malformed payloads go only to input event topics: never to compacted reference topics (a bad value would
# become the latest version of an entity) nor to the labels.
BAD_TOPICS = frozenset({"attendance", "activity", "alerts", "audit-findings", "tickets"})
MAX_ERRORS_KEPT = 20

Timestamps = Literal["event", "now"]


class ProduceError(RuntimeError):
    """The run could not deliver everything (or could not start)."""


@dataclass(slots=True)
class ProduceReport:
    produced: Counter[str] = field(default_factory=Counter)  # accepted by the producer, by topic short name
    failed: Counter[str] = field(default_factory=Counter)  # delivery failures, by topic short name
    malformed: Counter[str] = field(default_factory=Counter)  # deliberately malformed payloads sent
    errors: list[str] = field(default_factory=list)  # first few error messages
    client_errors: int = 0  # error_cb calls (broker connection trouble, fatal errors)
    undelivered: int = 0  # still queued after the final flush timed out
    elapsed_s: float = 0.0
    stopped: bool = False  # stopped early on request
    sim: SimStats | None = None
    caught_up_s: float | None = None  # live: seconds from the start until the stream reached the wall clock

    @property
    def total(self) -> int:
        return sum(self.produced.values())

    @property
    def ok(self) -> bool:
        return not self.failed and self.undelivered == 0

    @property
    def rate(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0


def producer_config(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "noc-simulator",
        "acks": "all",
        "enable.idempotence": True,
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 1_000_000,
        "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.timeout.ms": 120_000,
        "delivery.report.only.error": True,
        "socket.timeout.ms": 30_000,
    }


def malformed(value: bytes, rng: random.Random) -> bytes:
    """A payload a dead-letter path must catch: truncated, garbage, wrong marker, JSON, unknown schema."""
    u = rng.randrange(6)
    if u == 0:
        return value[: rng.randrange(1, max(2, len(value) - 1))]
    if u == 1:
        return rng.randbytes(rng.randint(1, 64))
    if u == 2:
        return b"\x00\x01" + value[2:]
    if u == 3:
        return b'{"event_id": "' + f"{rng.getrandbits(64):016x}".encode() + b'", "note": "json, not avro"}'
    if u == 4:
        return value[:2] + rng.randbytes(8) + value[10:]
    return value + rng.randbytes(rng.randint(1, 8))  # trailing bytes


def check_topics(bootstrap: str, names: Iterable[str], timeout_s: float = 15.0) -> list[str]:
    """The names missing from the cluster."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000, "log_level": 4})
    meta = admin.list_topics(timeout=timeout_s)
    return sorted(n for n in names if n not in meta.topics)


def run(records: Iterable[SimRecord], bootstrap: str, namespace: str, *, rate: float = 0.0,
        bad_rate: float = 0.0, seed: int = 0, timestamps: Timestamps = "event", max_events: int = 0,
        flush_timeout_s: float = 60.0, progress: TextIO | None = sys.stderr,
        stop: Callable[[], bool] | None = None, extra_config: dict[str, Any] | None = None,
        encoders_by_stem: dict[str, Encoder] | None = None, live: bool = False,
        clock_ms: Callable[[], int] | None = None) -> ProduceReport:
    """Produce ``records``; returns the report (check ``report.ok``). ``rate`` 0 means as fast as possible.

    ``live``: hold each record until the wall clock (``clock_ms``, default the system clock in epoch ms) has
    reached its stream time and its timestamp (see the module doc)."""
    from confluent_kafka import KafkaError, KafkaException, Message, Producer

    rep = ProduceReport()
    shorts = {topic(short, namespace): short for short in TOPICS}

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        rep.failed[shorts.get(str(msg.topic()), str(msg.topic()))] += 1
        if len(rep.errors) < MAX_ERRORS_KEPT:
            rep.errors.append(f"delivery to {msg.topic()}: {err}")

    def on_error(err: KafkaError) -> None:
        rep.client_errors += 1
        if len(rep.errors) < MAX_ERRORS_KEPT:
            rep.errors.append(f"client: {err}")

    conf = producer_config(bootstrap)
    conf.update(extra_config or {})
    conf["on_delivery"] = on_delivery
    conf["error_cb"] = on_error
    p = Producer(conf)
    produce, poll = p.produce, p.poll
    enc = encoders_by_stem or encoders(sorted(set(STEM.values())))
    names = {short: topic(short, namespace) for short in TOPICS}
    brng = random.Random(f"nocstream-malformed:{seed}")
    use_event_time = timestamps == "event"
    chunk = 1024 if rate <= 0 else max(1, min(1024, int(rate // 50)))
    produced = rep.produced
    t0 = time.monotonic()
    next_report = t0 + 1.0
    last_n, last_t = 0, t0
    n = 0
    wall = clock_ms or _epoch_ms
    try:
        for sr in records:
            value = enc[sr.stem](sr.record)
            name = names[sr.topic]
            ts = (sr.record.get("occurred_at") or sr.record.get("updated_at") or sr.at) if use_event_time else 0
            if live and not _wait_until(max(ts, sr.at), wall, poll, stop, rep, t0, progress):
                rep.stopped = True
                break
            while True:
                try:
                    produce(name, value, sr.key, timestamp=ts)
                    break
                except BufferError:
                    poll(0.05)  # the local queue is full: let librdkafka send, then retry
            produced[sr.topic] += 1
            n += 1
            if bad_rate > 0 and sr.topic in BAD_TOPICS and brng.random() < bad_rate:
                while True:
                    try:
                        produce(name, malformed(value, brng), sr.key, timestamp=ts)
                        break
                    except BufferError:
                        poll(0.05)
                rep.malformed[sr.topic] += 1
            if n % chunk == 0:
                poll(0)
                now = time.monotonic()
                if rate > 0:
                    ahead = n / rate - (now - t0)
                    if ahead > 0:
                        time.sleep(min(ahead, 1.0))  # pacing to the requested rate
                        now = time.monotonic()
                if now >= next_report:
                    if progress is not None:
                        _progress(progress, now - t0, (n - last_n) / (now - last_t), rep, sr.at if live else None)
                    last_n, last_t = n, now
                    next_report = now + 1.0
                if stop is not None and stop():
                    rep.stopped = True
                    break
            if max_events and n >= max_events:
                rep.stopped = True
                break
    except KeyboardInterrupt:
        rep.stopped = True
    finally:
        try:
            rep.undelivered = p.flush(flush_timeout_s)
        except KafkaException as exc:
            rep.errors.append(f"flush: {exc}")
            rep.undelivered = len(p)
        rep.elapsed_s = time.monotonic() - t0
    return rep


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


def _wait_until(due_ms: int, wall: Callable[[], int], poll: Callable[[float], int],
                stop: Callable[[], bool] | None, rep: ProduceReport, t0: float, progress: TextIO | None) -> bool:
    """Live pacing: return once the wall clock reaches ``due_ms`` (True), or False when asked to stop first.
    Serves delivery reports while waiting; notes (and reports) the moment the back-fill reached the clock."""
    now = wall()
    if due_ms <= now:
        return True
    if rep.caught_up_s is None:
        rep.caught_up_s = time.monotonic() - t0
        if progress is not None:
            print(f"caught up with the clock after {rep.total:,} records in {rep.caught_up_s:.1f}s; "
                  f"producing in real time from now on", file=progress, flush=True)
    while now < due_ms:
        if stop is not None and stop():
            return False
        poll(min((due_ms - now) / 1000, 0.5))  # waits on the producer's events: the records' time has not come
        now = wall()
    return True


def simulate(cfg: SimConfig, bootstrap: str, namespace: str, **kwargs: Any) -> ProduceReport:
    """Generate the world of ``cfg`` and produce it; ``kwargs`` go to :func:`run`."""
    sim = Simulation(cfg)
    rep = run(sim, bootstrap, namespace, seed=cfg.seed, **kwargs)
    rep.sim = sim.stats
    return rep


def _progress(out: TextIO, elapsed: float, rate: float, rep: ProduceReport, at: int | None = None) -> None:
    per = " ".join(f"{k}={v:,}" for k, v in sorted(rep.produced.items()))
    fail = f" FAILED={sum(rep.failed.values()):,}" if rep.failed else ""
    when = "" if at is None else f"  simulated {datetime.fromtimestamp(at / 1000, UTC):%Y-%m-%d %H:%M}Z"
    print(f"[{elapsed:7.1f}s] {rate:>9,.0f} ev/s  total={rep.total:,}{fail}{when}  {per}", file=out, flush=True)


def summary(rep: ProduceReport, cfg: SimConfig, namespace: str, out: TextIO) -> None:
    print(f"\nsimulate: seed {cfg.seed}, {cfg.tenants} tenants x {cfg.sites_per_tenant} sites x "
          f"{cfg.guards_per_site} guards, namespace {namespace!r}", file=out)
    print(f"{'topic':30} {'produced':>12} {'failed':>8} {'malformed':>10}", file=out)
    for short in sorted(set(rep.produced) | set(rep.failed)):
        print(f"{topic(short, namespace):30} {rep.produced[short]:>12,} {rep.failed[short]:>8,} "
              f"{rep.malformed[short]:>10,}", file=out)
    print(f"{'total':30} {rep.total:>12,} {sum(rep.failed.values()):>8,} {sum(rep.malformed.values()):>10,}",
          file=out)
    st = rep.sim
    if st is not None:
        injected = ", ".join(f"{k} {v}" for k, v in sorted(st.scenarios.items())) or "none"
        print(f"shifts: {st.shifts:,} worked, {st.cancelled:,} cancelled; scenarios injected: {injected}", file=out)
        if st.fallbacks:
            print("  not injectable (no colleague on shift): "
                  + ", ".join(f"{k} {v}" for k, v in sorted(st.fallbacks.items())), file=out)
        print("fraud labels: " + (", ".join(f"{k} {v}" for k, v in sorted(st.fraud_labels.items())) or "none")
              + ("; check-ins of fraudulent shifts labelled not fraud (nothing to see yet): "
                 + ", ".join(f"{k} {v}" for k, v in sorted(st.deferred_labels.items())) if st.deferred_labels else "")
              + f"; hard negatives: {sum(st.hard_negatives.values()):,}"
              + f"; late events: {st.late:,} ({st.late_beyond_grace:,} beyond the 2-min grace)", file=out)
        print("ticket workflows: " + (", ".join(f"{k} {v}" for k, v in sorted(st.tickets.items())) or "none"),
              file=out)
    state = "stopped early" if rep.stopped else "done"
    print(f"{state}: {rep.total:,} records in {rep.elapsed_s:.1f}s = {rep.rate:,.0f} records/s; "
          f"delivery failures {sum(rep.failed.values()):,}, undelivered {rep.undelivered:,}, "
          f"client errors {rep.client_errors:,}", file=out)
    for e in rep.errors:
        print(f"  error: {e}", file=out)
