"""Driving a real worker from tests, the benchmark and the demo: start/kill it as a subprocess, read topics
back, and compute the in-process reference result the worker must match.

Not used by the worker itself.
"""

from __future__ import annotations

import heapq
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from models.scoring import ModelCache
from schemas import serde
from schemas.topics import BY_SHORT, topic
from streams.app import worker_command
from streams.core.pipeline import INPUT_STEMS, Incoming, Pipeline, References
from streams.core.types import Out
from streams.input_loop import pipeline_group

TIMEOUT_S = 30.0


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.25) -> None:
    """Poll ``pred`` until true; AssertionError naming ``what`` when the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if pred():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)  # polling interval of a deadline loop, not a stand-in for synchronisation


@dataclass(slots=True)
class Consumed:
    topic: str  # short name
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


def read_topic(bootstrap: str, namespace: str, short: str, timeout_s: float = TIMEOUT_S) -> list[Consumed]:
    """Every record of a topic from the beginning to its end offsets now, in (partition, offset) order."""
    name = topic(short, namespace)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{namespace}.testkit", "enable.auto.commit": False,
                  "socket.timeout.ms": 10_000})
    try:
        ends: dict[int, int] = {}
        tps = []
        for p in range(BY_SHORT[short].partitions):
            low, high = c.get_watermark_offsets(TopicPartition(name, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
                tps.append(TopicPartition(name, p, OFFSET_BEGINNING))
        out: list[Consumed] = []
        if not tps:
            return out
        c.assign(tps)
        deadline = time.monotonic() + timeout_s
        at: dict[int, int] = {}  # next offset per partition
        while ends:
            if time.monotonic() > deadline:
                behind = {p: f"{at.get(p, 0)}/{end}" for p, end in sorted(ends.items())}
                raise TimeoutError(f"{name}: {len(out)} records read in {timeout_s} s; partitions behind "
                                   f"(next offset/end): {behind}")
            for m in c.consume(5000, timeout=0.5):
                if m.error() is not None:
                    continue  # librdkafka retries; a record it never delivers shows up in the timeout above
                part, off = m.partition(), m.offset()
                assert part is not None and off is not None
                out.append(Consumed(short, part, off, m.key(), m.value(), m.timestamp()[1]))
                at[part] = off + 1
                if part in ends and off + 1 >= ends[part]:
                    del ends[part]
        out.sort(key=lambda r: (r.partition, r.offset))
        return out
    finally:
        c.close()


def decoded(records: Iterable[Consumed], stem: str | None = None) -> list[dict[str, Any]]:
    """Decoded values; with ``stem``, only the records that decode as that schema (bad input skipped)."""
    store = serde.store()
    if stem is None:
        return [store.decode(r.value)[1] for r in records]
    out = []
    for r in records:
        try:
            out.append(store.decode(r.value, expected=stem)[1])
        except serde.DecodeError:
            continue
    return out


def end_offsets(bootstrap: str, namespace: str, shorts: Iterable[str]) -> int:
    """Sum of the end offsets of some topics (how many records they hold)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{namespace}.testkit"})
    try:
        total = 0
        for short in shorts:
            for p in range(BY_SHORT[short].partitions):
                _low, high = c.get_watermark_offsets(TopicPartition(topic(short, namespace), p), timeout=TIMEOUT_S)
                total += high
        return total
    finally:
        c.close()


def reference_outputs(bootstrap: str, namespace: str, interleave: str = "topic-major") -> list[Out]:
    """What the pipeline produces when fed the namespace's input topics in-process (one partition's topics
    either one topic after the other, ``topic-major``, or by Kafka timestamp, ``time``)."""
    refs = References()
    models = ModelCache()
    pipe = Pipeline(refs, models)
    for short in ("ref.sites", "ref.people", "ref.shifts"):
        for r in read_topic(bootstrap, namespace, short):
            pipe.apply_reference(short, r.value)
    refs.mark_loaded()
    records: list[Consumed] = []
    for short in INPUT_STEMS:
        records += read_topic(bootstrap, namespace, short)
    if interleave == "time":  # merge each partition's topics by timestamp, each topic kept in offset order
        lanes: dict[tuple[int, str], list[Consumed]] = {}
        for r in sorted(records, key=lambda r: (r.partition, r.topic, r.offset)):
            lanes.setdefault((r.partition, r.topic), []).append(r)
        records = list(heapq.merge(*lanes.values(), key=lambda r: (r.partition, r.timestamp)))
    else:  # the sparse topics first: what a backlog replay looks like
        rank = {"attendance": 0, "alerts": 1, "audit-findings": 2, "activity": 3}
        records.sort(key=lambda r: (r.partition, rank[r.topic], r.offset))
    from streams.core.pipeline import DictStore

    store = DictStore()
    outs: list[Out] = []
    for i in range(0, len(records), 2000):
        batch = [Incoming(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in records[i:i + 2000]]
        res = pipe.process(store, batch, namespace)
        res.commit()
        outs += res.outs
    return outs


def final_by_id(records: Iterable[dict[str, Any]], id_field: str, rev_field: str | None = None) -> dict[str, Any]:
    """Latest version of each record by id (highest ``rev_field`` when given, else the last seen)."""
    out: dict[str, Any] = {}
    for r in records:
        rid = r[id_field]
        if rev_field is None or rid not in out or r[rev_field] >= out[rid][rev_field]:
            out[rid] = r
    return out


class WorkerProcess:
    """``noc worker`` as a real subprocess (so SIGKILL is a real crash)."""

    def __init__(self, namespace: str, bootstrap: str, data_dir: Path, metrics_port: int,
                 log_path: Path, extra: Iterable[str] = ()) -> None:
        self.cmd = worker_command(namespace, bootstrap, metrics_port,
                                  ["--data-dir", str(data_dir), *extra])
        self.metrics_port = metrics_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=Path(__file__).resolve().parent.parent)
        log.close()
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=TIMEOUT_S)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=TIMEOUT_S)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self, site_stage: bool = False) -> dict[str, float]:
        """The worker's Prometheus samples (``name{labels}`` -> value), or its site-stage process's (served on the
        next port); empty while it is not serving."""
        port = self.metrics_port + 1 if site_stage else self.metrics_port
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def processed(self) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith("noc_worker_events_processed_total"))

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def group_caught_up(bootstrap: str, namespace: str, shorts: Iterable[str] = (*INPUT_STEMS, "tickets")) -> bool:
    """True when the worker group has committed every input partition up to its end offset (every output of
    those records was delivered before the commit)."""
    return not group_lag(bootstrap, namespace, shorts)


def group_lag(bootstrap: str, namespace: str,
              shorts: Iterable[str] = (*INPUT_STEMS, "tickets")) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (committed, end) for the input partitions the worker has not committed to the end.

    The person-keyed inputs are committed by the input loop's group (``streams.input_loop``), tickets by
    Faust's."""
    out: dict[tuple[str, int], tuple[int, int]] = {}
    shorts = list(shorts)
    for group, mine in ((pipeline_group(namespace), [s for s in shorts if s in INPUT_STEMS]),
                        (f"{namespace}.noc-worker", [s for s in shorts if s not in INPUT_STEMS])):
        if not mine:
            continue
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            tps, ends = [], {}
            for short in mine:
                name = topic(short, namespace)
                for p in range(BY_SHORT[short].partitions):
                    low, high = c.get_watermark_offsets(TopicPartition(name, p), timeout=TIMEOUT_S)
                    if high > low:
                        tps.append(TopicPartition(name, p))
                        ends[(name, p)] = high
            out.update({(tp.topic, tp.partition): (tp.offset, ends[(tp.topic, tp.partition)])
                        for tp in c.committed(tps, timeout=TIMEOUT_S) if tp.offset < ends[(tp.topic, tp.partition)]})
        finally:
            c.close()
    return out
