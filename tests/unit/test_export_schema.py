"""Avro -> Arrow schema mapping for Parquet exports: types kept, nullability, enums, arrays, nesting."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.serde import SchemaStore
from streams.export import ExportError, _write_parquet, arrow_schema, arrow_type, is_epoch_ms, resolve_topic

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _avsc(stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / f"{stem}.avsc").read_text())
    return data


def test_primitives_keep_their_width() -> None:
    rec = {"type": "record", "name": "R", "fields": [
        {"name": "b", "type": "boolean"}, {"name": "i", "type": "int"}, {"name": "l", "type": "long"},
        {"name": "f", "type": "float"}, {"name": "d", "type": "double"}, {"name": "s", "type": "string"},
        {"name": "y", "type": "bytes"}, {"name": "x", "type": {"type": "fixed", "name": "F", "size": 4}}]}
    s = arrow_schema(rec)
    assert [s.field(n).type for n in "bilfdsyx"] == [pa.bool_(), pa.int32(), pa.int64(), pa.float32(), pa.float64(),
                                                     pa.string(), pa.binary(), pa.binary(4)]
    assert not any(s.field(n).nullable for n in "bilfdsyx")


def test_nullable_enum_array_map_nested_and_named_references() -> None:
    rec = {"type": "record", "name": "R", "namespace": "io.t", "fields": [
        {"name": "opt", "type": ["null", "double"], "default": None},
        {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B"]}},
        {"name": "kind2", "type": ["null", "Kind"]},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "maybe", "type": {"type": "array", "items": ["null", "long"]}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [
            {"name": "v", "type": ["null", "string"]}]}},
        {"name": "inners", "type": {"type": "array", "items": "io.t.Inner"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "odd", "type": {"type": "long", "logicalType": "something-new"}}]}
    s = arrow_schema(rec)
    assert s.field("opt").type == pa.float64() and s.field("opt").nullable
    assert s.field("kind").type == pa.string() and not s.field("kind").nullable
    assert s.field("kind2").type == pa.string() and s.field("kind2").nullable
    assert s.field("tags").type == pa.list_(pa.field("item", pa.string(), nullable=False))
    assert s.field("maybe").type.value_field.nullable
    assert s.field("attrs").type == pa.map_(pa.string(), pa.field("value", pa.int64(), nullable=False))
    inner = s.field("inner").type
    assert isinstance(inner, pa.StructType) and inner.field("v").nullable
    assert s.field("inners").type.value_type == inner
    assert s.field("at").type == pa.timestamp("ms", tz="UTC")
    assert s.field("odd").type == pa.int64()
    assert json.loads(s.metadata[b"avro.schema"])["name"] == "R"


def test_unsupported_unions_and_unknown_names_are_errors() -> None:
    with pytest.raises(ExportError, match="non-null branches"):
        arrow_type(["null", "string", "long"])
    with pytest.raises(ExportError, match="unknown Avro type"):
        arrow_type("io.t.Nope")


@pytest.mark.parametrize("stem", sorted(p.stem for p in SCHEMAS.glob("*.avsc")))
def test_every_contract_maps(stem: str) -> None:
    avsc = _avsc(stem)
    s = arrow_schema(avsc)
    assert s.names == [f["name"] for f in avsc["fields"]]
    for f in avsc["fields"]:
        nullable = isinstance(f["type"], list) and "null" in f["type"]
        assert s.field(f["name"]).nullable == nullable, f["name"]


def test_fraud_score_round_trip_through_parquet(tmp_path: Path) -> None:
    store = SchemaStore()
    rec = {"score_id": "e1:rules-v1", "event_id": "e1", "tenant_id": 1, "site_id": "s1", "person_id": "p1",
           "device_id": "d1", "shift_id": None, "event_type": "CHECK_IN", "occurred_at": 1_793_491_200_000,
           "fraud_probability": 0.91, "risk_level": "CRITICAL", "model_version": "rules-v1",
           "reasons": [{"feature": "f", "value": 1.5, "contribution": 0.7, "description": "why"}],
           "feature_names": ["a", "b"], "features": [1.0, math.nan]}
    _, decoded = store.decode(store.encode("fraud_score", rec), expected="fraud_score")
    out = tmp_path / "fs.parquet"
    _write_parquet(out, _avsc("fraud_score"), iter([decoded, decoded]))
    table = pq.read_table(out)
    assert table.num_rows == 2
    assert table.schema.field("occurred_at").type == pa.timestamp("ms", tz="UTC")
    assert table.column("occurred_at").cast(pa.int64()).to_pylist() == [1_793_491_200_000] * 2
    assert table.schema.field("risk_level").type == pa.string()
    assert table.schema.field("shift_id").nullable
    row = table.to_pylist()[0]
    assert row["risk_level"] == "CRITICAL" and row["shift_id"] is None and row["reasons"][0]["feature"] == "f"
    assert math.isnan(row["features"][1])
    assert b"avro.schema" in (table.schema.metadata or {})


def _time_fields(t: Any, path: str = "") -> set[str]:
    found: set[str] = set()
    if isinstance(t, pa.StructType):
        for f in t:
            found |= _time_fields(f.type, f"{path}.{f.name}" if path else f.name)
    elif isinstance(t, pa.ListType):
        found |= _time_fields(t.value_type, path + "[]")
    elif isinstance(t, pa.TimestampType):
        assert t.unit == "ms" and t.tz == "UTC", path
        found.add(path)
    return found


def test_times_are_utc_millisecond_timestamps_in_every_contract() -> None:
    want = {
        "activity_signal": {"occurred_at", "received_at"}, "attendance_event": {"occurred_at", "received_at"},
        "audit_finding": {"occurred_at", "received_at"}, "noc_alert": {"occurred_at", "received_at"},
        "ticket": {"occurred_at", "received_at"}, "anomaly": {"window_start", "window_end"},
        "signal_window": {"window_start", "window_end"}, "baseline": {"last_threshold_update", "updated_at"},
        "correlated_incident": {"evidence[].occurred_at", "first_seen", "last_seen", "updated_at"},
        "dead_letter": {"record_timestamp"}, "finding_escalation": {"escalated_at"}, "fraud_score": {"occurred_at"},
        "label": {"occurred_at"}, "model_event": {"occurred_at"}, "noc_event": {"timestamp"},
        "person": {"updated_at"}, "site": {"updated_at"}, "shift": {"starts_at", "ends_at", "updated_at"},
        "ticket_command": {"issued_at"}}
    got = {stem: _time_fields(pa.struct(list(arrow_schema(_avsc(stem))))) for stem in want}
    assert got == want
    assert sorted(p.stem for p in SCHEMAS.glob("*.avsc")) == sorted(want)
    # counts and ids stay integers
    assert arrow_schema(_avsc("baseline")).field("sample_count").type == pa.int64()
    assert arrow_schema(_avsc("dead_letter")).field("offset").type == pa.int64()
    assert not is_epoch_ms({"name": "x", "type": "string", "doc": "UTC epoch ms as text"})
    assert is_epoch_ms({"name": "x", "type": ["null", "long"], "doc": "When, UTC epoch ms."})


def test_resolve_topic() -> None:
    assert resolve_topic("noc.attendance", "noc") == "attendance"
    assert resolve_topic("fraud-scores", "x") == "fraud-scores"
    with pytest.raises(ExportError, match="unknown topic"):
        resolve_topic("nope", "noc")
