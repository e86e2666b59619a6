"""Avro single-object serde: round trips, schema evolution, and bad bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastavro.utils import generate_many

from schemas.compat import problems
from schemas.serde import MAGIC, SCHEMA_DIR, DecodeError, EncodeError, SchemaStore, crc64_avro, store
from schemas.topics import CATALOGUE

STEMS = sorted(store().current)


def test_every_catalogued_topic_has_a_schema() -> None:
    assert {t.schema for t in CATALOGUE} <= set(STEMS)


def test_crc64_matches_the_avro_spec_test_vector() -> None:
    # Java's SchemaNormalization.parsingFingerprint64 of the schema "null".
    assert crc64_avro(b'"null"') == 0x63DD24E7CC258F8A


def test_every_field_is_documented() -> None:
    def walk(node: object) -> list[str]:
        missing: list[str] = []
        if isinstance(node, dict):
            if node.get("type") == "record":
                missing += [f"{node['name']}.{f['name']}" for f in node["fields"] if not f.get("doc")]
            for v in node.values():
                missing += walk(v)
        elif isinstance(node, list):
            for v in node:
                missing += walk(v)
        return missing

    for stem in STEMS:
        assert walk(json.loads((SCHEMA_DIR / f"{stem}.avsc").read_text())) == [], stem


@pytest.mark.parametrize("stem", STEMS)
def test_round_trip(stem: str) -> None:
    s = store()
    for record in generate_many(s.current[stem].parsed, 20):
        data = s.encode(stem, record)
        assert data[:2] == MAGIC
        assert data[2:10] == s.current[stem].fingerprint.to_bytes(8, "little")
        got_stem, got = s.decode(data, expected=stem)
        assert got_stem == stem
        assert s.encode(stem, got) == data  # decoding loses nothing


def test_current_schemas_read_every_released_version() -> None:
    assert problems(store()) == []


def test_breaking_change_is_caught(tmp_path: Path) -> None:
    shutil.copytree(SCHEMA_DIR / "released", tmp_path / "released")
    for f in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "noc_alert.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "zone", "type": "string", "doc": "new required field, no default"})
    path.write_text(json.dumps(schema))
    found = problems(SchemaStore(tmp_path), samples=2)
    assert len(found) == 1 and found[0].startswith("noc_alert v1: MISSING_FIELD")


def _alert() -> dict[str, object]:
    return {"event_id": "a-1", "tenant_id": 1, "site_id": "s1", "person_id": "p1", "occurred_at": 1,
            "received_at": 2, "alert_type": "PANIC_BUTTON", "severity": "HIGH", "message": "", "source": "noc"}


@pytest.mark.parametrize(("data", "reason"), [
    (None, "MALFORMED"),
    (b"", "MALFORMED"),
    (b"\xc3\x01\x00", "MALFORMED"),
    (b"{\"json\": true}", "MALFORMED"),
    (b"\xc3\x01" + b"\x00" * 8 + b"body", "UNKNOWN_SCHEMA"),
])
def test_bad_bytes_raise_a_typed_error(data: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        store().decode(data)
    assert info.value.reason == reason


def test_truncated_and_padded_bodies() -> None:
    good = store().encode("noc_alert", _alert())
    for cut in range(11, len(good)):
        with pytest.raises(DecodeError) as info:
            store().decode(good[:cut])
        assert info.value.reason == "MALFORMED"
    with pytest.raises(DecodeError, match="trailing"):
        store().decode(good + b"\x00")


def test_wrong_schema_for_the_topic() -> None:
    with pytest.raises(DecodeError) as info:
        store().decode(store().encode("noc_alert", _alert()), expected="attendance_event")
    assert info.value.reason == "WRONG_SCHEMA"


def test_encode_names_the_problem() -> None:
    bad = _alert() | {"severity": "APOCALYPTIC"}
    with pytest.raises(EncodeError, match="noc_alert"):
        store().encode("noc_alert", bad)


def test_schemas_carry_fastavros_parsed_marker() -> None:
    # Without it fastavro re-parses the schema on every read (3-4x slower decoding; see bench_sink.py).
    s = store()
    assert all("__fastavro_parsed" in sv.parsed for sv in s.by_fingerprint.values())
    assert s.current["activity_signal"] is s.by_fingerprint[s.current["activity_signal"].fingerprint]
