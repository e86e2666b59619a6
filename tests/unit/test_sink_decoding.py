from __future__ import annotations

from test_sink_records import SAMPLES

from schemas.serde import SchemaStore, encode
from sinks.decoding import fast_store


def test_fast_store_decodes_exactly_like_serde_current_and_released_writers() -> None:
    plain, fast = SchemaStore(), fast_store()
    assert fast is fast_store()
    for stem, rec in SAMPLES.values():
        data = encode(stem, rec)
        assert repr(fast.decode(data, expected=stem)) == repr(plain.decode(data, expected=stem))
        for old in plain.released.get(stem, []):
            try:
                old_bytes = plain.encode_with(old, rec)
            except (ValueError, TypeError, KeyError):
                continue  # the sample uses a field the old version lacks
            assert repr(fast.decode(old_bytes, expected=stem)) == repr(plain.decode(old_bytes, expected=stem))


def test_fast_store_schemas_carry_fastavros_parsed_marker() -> None:
    # Without it fastavro re-parses the schema on every read (the speed-up is measured in bench_sink.py).
    fast = fast_store()
    assert all("__fastavro_parsed" in sv.parsed for sv in fast.by_fingerprint.values())
    assert fast.current["activity_signal"] is fast.by_fingerprint[fast.current["activity_signal"].fingerprint]
