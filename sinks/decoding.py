"""The sink's schema store: ``schemas.serde.SchemaStore`` with schemas fastavro can use without re-parsing.

serde parses schemas with ``fastavro.parse_schema(..., _write_hint=False)``, which leaves out fastavro's
"already parsed" marker, so every ``schemaless_reader`` call parses the schema again (measured 3-4x slower
decoding). This private store re-parses its own copies with fastavro's defaults, in place, so serde's
decode logic (errors, fingerprints, schema resolution, identity checks) is used unchanged. Once serde
parses with the marker itself this is a no-op.
"""

from __future__ import annotations

import json

import fastavro

from schemas.serde import SCHEMA_DIR, SchemaStore, SchemaVersion

_store: SchemaStore | None = None


def _path(sv: SchemaVersion) -> str:
    rel = f"{sv.stem}.avsc" if sv.version == "current" else f"released/{sv.stem}/{sv.version}.avsc"
    return str(SCHEMA_DIR / rel)


def fast_store() -> SchemaStore:
    """The process-wide store the sink decodes with (built once)."""
    global _store
    if _store is None:
        st = SchemaStore()
        done: set[int] = set()
        for sv in (*st.current.values(), *st.by_fingerprint.values()):
            if id(sv) in done or "__fastavro_parsed" in sv.parsed:
                continue
            done.add(id(sv))
            with open(_path(sv)) as f:
                parsed = fastavro.parse_schema(json.load(f))
            assert isinstance(parsed, dict)
            sv.parsed.clear()
            sv.parsed.update(parsed)  # in place: this store's own dicts; "writer is reader" still holds
        _store = st
    return _store
