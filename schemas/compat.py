"""Backward-compatibility check: every current schema must read data written with each released version.

It encodes sample records with the released (writer) schema and decodes them with the current (reader)
schema through the same path consumers use, so what passes here is what works on the wire.
"""

from __future__ import annotations

from fastavro.utils import generate_many
from fastavro.validation import validate

from schemas.serde import DecodeError, SchemaStore


def problems(store: SchemaStore, samples: int = 25) -> list[str]:
    """Human-readable incompatibilities; empty when every released version is readable."""
    found: list[str] = []
    for stem, current in store.current.items():
        if stem not in store.released:
            found.append(f"{stem}: no released version under schemas/released/{stem}/")
            continue
        for old in store.released[stem]:
            if old.name != current.name:
                found.append(f"{stem} {old.version}: record renamed {old.name} -> {current.name}")
                continue
            for record in generate_many(old.parsed, samples):
                try:
                    _, decoded = store.decode(store.encode_with(old, record), expected=stem)
                except DecodeError as exc:
                    found.append(f"{stem} {old.version}: {exc}")
                    break
                if not validate(decoded, current.parsed, raise_errors=False):
                    found.append(f"{stem} {old.version}: decoded record does not fit the current schema")
                    break
    return found
