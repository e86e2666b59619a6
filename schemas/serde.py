"""Avro single-object encoding (spec: "Single object encoding") with fastavro.

Wire format: ``C3 01`` marker, the writer schema's 8-byte CRC-64-AVRO fingerprint (little-endian), then
the Avro binary body. Any Avro client can produce it (Java's ``BinaryMessageEncoder``, for one). The
:class:`SchemaStore` maps fingerprints to writer schemas, current and released, and resolves an older
writer schema to the current reader schema of the same record name.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
SCHEMA_DIR = Path(__file__).resolve().parent
_EMPTY = 0xC15D213AA4D7A795  # CRC-64-AVRO seed from the Avro spec


def _fp_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_FP_TABLE = _fp_table()


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint the Avro spec defines for schema fingerprints."""
    fp = _EMPTY
    for b in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ b) & 0xFF]
    return fp


class DecodeError(ValueError):
    """Bytes that cannot become a record. ``reason`` is a stable code used for dead-lettering."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EncodeError(ValueError):
    """A record that does not fit its schema (a producer bug, reported with the field at fault)."""


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    name: str  # full record name, e.g. io.nocstream.AttendanceEvent
    stem: str  # file stem, e.g. attendance_event
    version: str  # "current" or "v1", "v2", ...
    parsed: dict[str, Any]
    fingerprint: int
    # The single-object header (marker + fingerprint) every record of this writer starts with; built once.
    header: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "header", MAGIC + self.fingerprint.to_bytes(8, "little"))


def _load(path: Path, stem: str, version: str) -> SchemaVersion:
    raw = json.loads(path.read_text())
    parsed = fastavro.parse_schema(raw)  # keeps fastavro's "parsed" marker: decode does not re-parse each time
    assert isinstance(parsed, dict)
    pcf = to_parsing_canonical_form(raw)
    return SchemaVersion(raw["namespace"] + "." + raw["name"], stem, version, parsed, crc64_avro(pcf.encode()))


class SchemaStore:
    """Current schemas by file stem, and every known writer schema (current or released) by fingerprint."""

    def __init__(self, directory: Path = SCHEMA_DIR) -> None:
        self.current: dict[str, SchemaVersion] = {}
        self.by_fingerprint: dict[int, SchemaVersion] = {}
        self.released: dict[str, list[SchemaVersion]] = {}
        for path in sorted(directory.glob("*.avsc")):
            sv = _load(path, path.stem, "current")
            self.current[path.stem] = sv
            self.by_fingerprint[sv.fingerprint] = sv
        for path in sorted(directory.glob("released/*/v*.avsc")):
            stem = path.parent.name
            sv = _load(path, stem, path.stem)
            self.released.setdefault(stem, []).append(sv)
            self.by_fingerprint.setdefault(sv.fingerprint, sv)
        self._by_name = {sv.name: sv for sv in self.current.values()}
        # The 10-byte header of every decodable writer -> (writer, reader): one lookup per record in decode.
        self._by_header = {sv.header: (sv, self._by_name[sv.name])
                           for sv in self.by_fingerprint.values() if sv.name in self._by_name}

    def encode(self, stem: str, record: dict[str, Any]) -> bytes:
        sv = self.current[stem]
        buf = io.BytesIO()
        buf.write(sv.header)
        try:
            fastavro.schemaless_writer(buf, sv.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EncodeError(f"{stem}: {exc}") from exc
        return buf.getvalue()

    def encode_with(self, sv: SchemaVersion, record: dict[str, Any]) -> bytes:
        """Encode with a specific (e.g. released) writer schema; used by evolution tests and old producers."""
        buf = io.BytesIO()
        buf.write(sv.header)
        fastavro.schemaless_writer(buf, sv.parsed, record)
        return buf.getvalue()

    def decode(self, data: bytes | None, expected: str | None = None) -> tuple[str, dict[str, Any]]:
        """Return ``(stem, record)`` read with the current reader schema, or raise :class:`DecodeError`.

        ``expected`` is the stem the topic carries; a record of another type is refused (WRONG_SCHEMA).
        """
        if data is None:
            raise DecodeError("MALFORMED", "empty value (tombstone or null)")
        known = self._by_header.get(data[:HEADER_LEN])
        writer, reader = known if known is not None else self._unknown_header(data)
        if expected is not None and reader.stem != expected:
            raise DecodeError("WRONG_SCHEMA", f"got {reader.stem}, this topic carries {expected}")
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        try:
            if writer is reader:
                record = fastavro.schemaless_reader(buf, writer.parsed, None)
            else:
                record = fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)
        except fastavro.read.SchemaResolutionError as exc:
            raise DecodeError("MISSING_FIELD", f"{writer.stem} {writer.version}: {exc}") from exc
        except (EOFError, ValueError, IndexError, UnicodeDecodeError, TypeError, KeyError) as exc:
            raise DecodeError("MALFORMED", f"{reader.stem}: body does not decode: {exc!r}") from exc
        if buf.tell() != len(data):
            raise DecodeError("MALFORMED", f"{reader.stem}: {len(data) - buf.tell()} trailing bytes")
        assert isinstance(record, dict)
        return reader.stem, record

    def _unknown_header(self, data: bytes) -> tuple[SchemaVersion, SchemaVersion]:
        """Say what is wrong with a header that is not one of the known writers'."""
        if len(data) < HEADER_LEN:
            raise DecodeError("MALFORMED", f"{len(data)} bytes is shorter than the 10-byte header")
        if data[:2] != MAGIC:
            raise DecodeError("MALFORMED", f"bad marker {data[:2].hex()}, expected c301 (Avro single-object)")
        fp = int.from_bytes(data[2:10], "little")
        writer = self.by_fingerprint.get(fp)
        if writer is None:
            raise DecodeError("UNKNOWN_SCHEMA", f"no schema with fingerprint {fp:016x}")
        raise DecodeError("UNKNOWN_SCHEMA", f"{writer.name} has no current schema")


_default: SchemaStore | None = None


def store() -> SchemaStore:
    """The process-wide store of the packaged schemas (loaded once)."""
    global _default
    if _default is None:
        _default = SchemaStore()
    return _default


def encode(stem: str, record: dict[str, Any]) -> bytes:
    return store().encode(stem, record)


def decode(data: bytes | None, expected: str | None = None) -> dict[str, Any]:
    return store().decode(data, expected)[1]
