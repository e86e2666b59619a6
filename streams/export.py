"""``noc export``: a topic's records over a time range to a Parquet or Avro file a notebook can open.

* Avro: a fastavro object container file written with the topic's current Avro schema (embedded in the
  file header, as the container format requires).
* Parquet: pyarrow, with the Arrow schema derived from the Avro schema (:func:`arrow_schema`): types kept
  (long -> int64, int -> int32, float -> float32, double -> float64, boolean, string, bytes -> binary),
  ``["null", T]`` unions nullable, enums as strings, arrays as lists, records as structs, maps as maps,
  Avro logical types as their Arrow equivalents. Times are ``timestamp[ms, tz=UTC]``: the contracts carry
  them as ``long`` fields documented as "UTC epoch ms" (or "milliseconds"), which :func:`is_epoch_ms` finds.
  The Avro schema is also stored in the Parquet key-value metadata (``avro.schema``), so the file says where
  it came from.

Each record is written once by its stable id (:mod:`streams.export_dedup`): the output topics are
at-least-once, and a worker crash leaves some records in them twice. Revised records (incidents, baselines,
reference data) are written at their latest revision, or, with ``revisions="all"``, once per revision (the
revision field is a column). Records are read with the current reader schema (older writer schemas are
resolved), in a deterministic order (record timestamp, then partition, then offset), twice: the first pass
picks the records to keep, the second writes them. Undecodable records are skipped and counted.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from schemas.serde import DecodeError, SchemaStore
from schemas.topics import BY_SHORT, topic
from streams.export_dedup import Picker, Revisions, identity_of
from streams.replay_io import PartitionReader, ReplayError, Span, consumer, offset_range
from streams.replay_merge import Item, merge

if TYPE_CHECKING:
    import pyarrow as pa

Format = Literal["parquet", "avro"]
ROW_GROUP = 50_000


class ExportError(ReplayError):
    """An export that cannot run: unknown topic, bad time range, nothing in the range."""


# -- Avro schema -> Arrow schema -----------------------------------------------------------------------

_PRIMITIVE = {"boolean": "bool_", "int": "int32", "long": "int64", "float": "float32", "double": "float64",
              "bytes": "binary", "string": "string", "null": "null"}


def arrow_type(avro: Any, named: dict[str, Any] | None = None, namespace: str = "") -> tuple[pa.DataType, bool]:
    """(Arrow type, nullable) for an Avro type. ``named`` collects named types for later references."""
    import pyarrow as pa

    named = {} if named is None else named
    if isinstance(avro, list):  # union
        branches = [b for b in avro if b != "null"]
        nullable = len(branches) < len(avro)
        if len(branches) != 1:
            raise ExportError(f"union {avro!r} has {len(branches)} non-null branches; only [null, T] maps to Arrow")
        branch, inner_nullable = arrow_type(branches[0], named, namespace)
        return branch, nullable or inner_nullable
    if isinstance(avro, str):
        if avro in _PRIMITIVE:
            return getattr(pa, _PRIMITIVE[avro])(), avro == "null"
        full = avro if "." in avro else f"{namespace}.{avro}" if namespace else avro
        ref = named.get(full, named.get(avro))
        if ref is None:
            raise ExportError(f"unknown Avro type {avro!r}")
        return ref, False
    if not isinstance(avro, dict):
        raise ExportError(f"not an Avro type: {avro!r}")
    kind = avro["type"]
    logical = avro.get("logicalType")
    if logical is not None:
        lt = _logical(kind, logical, avro)
        if lt is not None:
            return lt, False
    if kind in _PRIMITIVE:
        return arrow_type(kind, named, namespace)
    ns = avro.get("namespace", namespace)
    t: pa.DataType
    if kind == "enum":
        t = pa.string()
        _name(named, avro, ns, t)
        return t, False
    if kind == "fixed":
        t = pa.binary(int(avro["size"]))
        _name(named, avro, ns, t)
        return t, False
    if kind == "array":
        item, item_null = arrow_type(avro["items"], named, ns)
        return pa.list_(pa.field("item", item, nullable=item_null)), False
    if kind == "map":
        value, value_null = arrow_type(avro["values"], named, ns)
        return pa.map_(pa.string(), pa.field("value", value, nullable=value_null)), False
    if kind == "record":
        fields = []
        for f in avro["fields"]:
            ft, fnull = arrow_type(f["type"], named, ns)
            if is_epoch_ms(f):
                ft = pa.timestamp("ms", tz="UTC")
            meta = {"doc": f["doc"]} if f.get("doc") else None
            fields.append(pa.field(f["name"], ft, nullable=fnull, metadata=meta))
        t = pa.struct(fields)
        _name(named, avro, ns, t)
        return t, False
    raise ExportError(f"unsupported Avro type {kind!r}")


def is_epoch_ms(field: dict[str, Any]) -> bool:
    """A ``long`` (or ``["null", "long"]``) field documented as UTC epoch milliseconds: a time."""
    t = field["type"]
    branches = [b for b in t if b != "null"] if isinstance(t, list) else [t]
    doc = str(field.get("doc", "")).lower()
    return branches == ["long"] and "epoch" in doc and ("epoch ms" in doc or "epoch milliseconds" in doc)


def _name(named: dict[str, Any], avro: dict[str, Any], ns: str, t: pa.DataType) -> None:
    name = str(avro["name"])
    named[name if "." in name or not ns else f"{ns}.{name}"] = t
    named.setdefault(name, t)


def _logical(kind: str, logical: str, avro: dict[str, Any]) -> pa.DataType | None:
    import pyarrow as pa

    if kind == "long" and logical == "timestamp-millis":
        return pa.timestamp("ms", tz="UTC")
    if kind == "long" and logical == "timestamp-micros":
        return pa.timestamp("us", tz="UTC")
    if kind == "long" and logical == "local-timestamp-millis":
        return pa.timestamp("ms")
    if kind == "int" and logical == "date":
        return pa.date32()
    if kind == "int" and logical == "time-millis":
        return pa.time32("ms")
    if kind == "long" and logical == "time-micros":
        return pa.time64("us")
    if kind in ("bytes", "fixed") and logical == "decimal":
        return pa.decimal128(int(avro["precision"]), int(avro.get("scale", 0)))
    if kind == "string" and logical == "uuid":
        return pa.string()
    return None  # unknown logical types fall back to the underlying type, as the Avro spec says


def arrow_schema(avro_record: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of a top-level Avro record schema (the JSON of an .avsc file)."""
    import pyarrow as pa

    t, _ = arrow_type(avro_record)
    assert isinstance(t, pa.StructType)
    meta = {"avro.schema": json.dumps(avro_record, sort_keys=True)}
    return pa.schema([t.field(i) for i in range(t.num_fields)], metadata=meta)


# -- reading and writing -------------------------------------------------------------------------------


def resolve_topic(name: str, namespace: str) -> str:
    """A catalogue short name from ``attendance`` or ``<namespace>.attendance``."""
    short = name.removeprefix(namespace + ".")
    if short not in BY_SHORT:
        raise ExportError(f"unknown topic {name!r}; catalogued topics: {', '.join(sorted(BY_SHORT))}")
    return short


@dataclass
class ExportReport:
    topic: str
    path: Path
    records: int  # written: one per stable id (per revision with revisions="all")
    skipped: int  # undecodable
    elapsed_s: float
    read: int = 0  # records read in the range
    duplicates: int = 0  # decodable records not written: repeats of a written id, or older revisions


def export(bootstrap: str, namespace: str, topic_name: str, from_ms: int | None, to_ms: int | None, fmt: Format,
           out: Path, progress: TextIO | None = sys.stderr, revisions: Revisions = "latest") -> ExportReport:
    """Write the records of ``topic_name`` timestamped in [from_ms, to_ms) to ``out``, each stable id once."""
    short = resolve_topic(topic_name, namespace)
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise ExportError("--to must be after --from")
    if fmt not in ("parquet", "avro"):
        raise ExportError(f"unknown format {fmt!r}: parquet or avro")
    if revisions not in ("latest", "all"):
        raise ExportError(f"unknown revisions {revisions!r}: latest or all")
    full = topic(short, namespace)
    stem = BY_SHORT[short].schema
    store = SchemaStore()
    avro_json = json.loads((Path(__file__).resolve().parent.parent / "schemas" / f"{stem}.avsc").read_text())
    c = consumer(bootstrap)
    try:
        spans = offset_range(c, short, full, from_ms, to_ms)
    except ReplayError as exc:
        raise ExportError(f"{exc} (namespace {namespace!r})") from exc
    finally:
        c.close()
    total = sum(s.count for s in spans)
    if total == 0:
        raise ExportError(f"no records in {full} between {_iso(from_ms)} and {_iso(to_ms)}")
    t0 = time.monotonic()
    bar = _Bar(progress, full, total)

    picker = Picker(identity_of(short, revisions))
    for item in _read(bootstrap, spans, bar, "1/2"):
        try:
            _, rec = store.decode(item.value, expected=stem)
        except DecodeError:
            picker.note(None)
            continue
        picker.note(rec)
    keep = picker.keep()
    read, skipped, kept = len(picker), picker.undecodable, int(keep.sum())
    if kept == 0:
        raise ExportError(f"none of the {skipped} records in {full} in that range decode as {stem}")

    def records() -> Iterator[dict[str, Any]]:
        seen = 0
        for i, item in enumerate(_read(bootstrap, spans, bar, "2/2")):
            seen = i + 1
            if i >= read or not keep[i]:
                continue
            _, rec = store.decode(item.value, expected=stem)
            if not picker.check(i, rec):
                raise ExportError(f"{full} changed between the export's two passes (record {i}): try again")
            yield rec
        if seen != read:
            raise ExportError(f"{full} changed between the export's two passes ({read:,} records, then {seen:,})")

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    try:
        if fmt == "avro":
            _write_avro(tmp, store.current[stem].parsed, records())
        else:
            _write_parquet(tmp, avro_json, records())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    rep = ExportReport(full, out, kept, skipped, time.monotonic() - t0, read, read - skipped - kept)
    if progress is not None:
        print(f"\rexport {full}: {rep.records:,} records to {out} ({fmt}) in {rep.elapsed_s:.1f}s"
              + (f"; {rep.duplicates:,} repeated ids or older revisions left out" if rep.duplicates else "")
              + (f"; {rep.skipped:,} undecodable skipped" if rep.skipped else ""), file=progress, flush=True)
    return rep


class _Bar:
    def __init__(self, out: TextIO | None, name: str, total: int) -> None:
        self.out, self.name, self.total = out, name, total
        self.last = time.monotonic()

    def tick(self, n: int, phase: str) -> None:
        if self.out is not None and n % 2048 == 0 and time.monotonic() - self.last > 0.5:
            self.last = time.monotonic()
            print(f"\rexport {self.name} (pass {phase}): {n:,}/{self.total:,} records "
                  f"({n / self.total * 100:5.1f}%)", end="", file=self.out, flush=True)


def _read(bootstrap: str, spans: list[Span], bar: _Bar, phase: str) -> Iterator[Item]:
    with PartitionReader(bootstrap, spans) as reader:
        for n, item in enumerate(merge(reader.iterators()), 1):
            yield item
            bar.tick(n, phase)


def _write_avro(path: Path, parsed: dict[str, Any], recs: Iterator[dict[str, Any]]) -> None:
    import fastavro

    with path.open("wb") as fo:
        fastavro.writer(fo, parsed, recs, codec="deflate")


def _write_parquet(path: Path, avro_json: dict[str, Any], recs: Iterator[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(avro_json)
    writer = pq.ParquetWriter(str(path), schema, compression="zstd")
    try:
        chunk: list[dict[str, Any]] = []
        for rec in recs:
            chunk.append(rec)
            if len(chunk) >= ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                chunk = []
        if chunk:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
    finally:
        writer.close()


def _iso(ms: int | None) -> str:
    if ms is None:
        return "the end" if ms is None else ""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
