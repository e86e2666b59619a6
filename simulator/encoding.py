"""Fast Avro single-object encoding for the simulator's hot path.

``fastavro.schemaless_writer`` walks the schema for every record (~17 µs for an activity signal here);
this module compiles each schema once into a Python function whose body is a single ``b"".join`` of
per-field expressions (~3.5 µs). Low-cardinality strings (ids of sites, people, devices, shifts, tours...)
are encoded once and cached. The output is byte-identical to :func:`schemas.serde.encode` — the unit
tests check it on every record the generator makes. Schemas using a shape the compiler does not handle
(unions other than null-or-one-type, maps, fixed) fall back to fastavro.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any

import fastavro

from schemas.serde import SchemaVersion, store

Encoder = Callable[[dict[str, Any]], bytes]

# Strings that are (nearly) unique per record: caching them would only grow the cache.
UNCACHED = frozenset({"event_id", "label_id", "ticket_id", "related_event_id", "command_id", "score_id", "title",
                      "description", "message", "evidence_summary", "name"})
CACHE_LIMIT = 200_000


class Unsupported(Exception):
    """The schema uses a shape the compiler does not handle."""


def _zigzag_varint(n: int) -> bytes:
    """Avro int/long: zigzag, then little-endian base-128 varint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [_zigzag_varint(i) for i in range(-64, 64)]


def encode_long(n: int) -> bytes:
    return _SMALL[n + 64] if -64 <= n < 64 else _zigzag_varint(n)


def encode_string(s: str) -> bytes:
    b = s.encode()
    return encode_long(len(b)) + b


def encode_bytes(b: bytes) -> bytes:
    return encode_long(len(b)) + b


_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack


def _cache_put(cache: dict[str, bytes], s: str) -> bytes:
    if len(cache) > CACHE_LIMIT:
        cache.clear()
    b = cache[s] = encode_string(s)
    return b


class _Compiler:
    """Turns a schema into one Python expression per record (nested records and arrays get helpers)."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"_long": encode_long, "_str": encode_string, "_bytes": encode_bytes,
                                   "_pd": _pack_double, "_pf": _pack_float, "_cput": _cache_put}
        self.n = 0
        self.named: dict[str, Any] = {}

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def define(self, prefix: str, arg: str, body: str) -> str:
        fn = self.name(prefix)
        exec(compile(f"def {fn}({arg}):\n    return {body}\n", f"<avro encoder {fn}>", "exec"), self.ns)
        return fn

    def expr(self, schema: Any, x: str, cache: bool) -> str:
        """An expression giving the encoding of the value named ``x`` (a plain local name)."""
        if isinstance(schema, str) and schema in self.named:
            schema = self.named[schema]
        if isinstance(schema, list):
            return self.union(schema, x, cache)
        kind = schema if isinstance(schema, str) else schema["type"]
        if isinstance(schema, dict) and "name" in schema and kind in ("record", "enum", "fixed"):
            self.named[schema["name"]] = schema
        if kind == "null":
            return "b''"
        if kind == "boolean":
            return f"(b'\\x01' if {x} else b'\\x00')"
        if kind in ("int", "long"):
            return f"_long({x})"
        if kind == "double":
            return f"_pd({x})"
        if kind == "float":
            return f"_pf({x})"
        if kind == "bytes":
            return f"_bytes({x})"
        if kind == "string":
            if cache:
                c = self.name("_C")
                self.ns[c] = {}
                return f"({c}.get({x}) or _cput({c}, {x}))"
            return f"_str({x})"
        if kind == "enum":
            m = self.name("_E")
            self.ns[m] = {s: encode_long(i) for i, s in enumerate(schema["symbols"])}
            return f"{m}[{x}]"
        if kind == "array":
            item = self.define("_item", "i", self.expr(schema["items"], "i", False))
            body = f"b'\\x00' if not v else _long(len(v)) + b''.join([{item}(i) for i in v]) + b'\\x00'"
            return f"{self.define('_arr', 'v', body)}({x})"
        if kind == "record":
            return f"{self.define('_rec', 'r', self.record(schema, 'r'))}({x})"
        raise Unsupported(str(kind))

    def union(self, branches: list[Any], x: str, cache: bool) -> str:
        names = [b if isinstance(b, str) and b not in self.named else "named" if isinstance(b, str)
                 else b.get("type") for b in branches]
        if len(branches) != 2 or "null" not in names:
            raise Unsupported(f"union {names}")
        null_i = names.index("null")
        v = self.name("uu") + "_"
        inner = self.expr(branches[1 - null_i], v, cache)
        return f"({encode_long(null_i)!r} if ({v} := {x}) is None else {encode_long(1 - null_i)!r} + {inner})"

    def record(self, schema: dict[str, Any], r: str) -> str:
        parts = []
        for f in schema["fields"]:
            get = f"{r}.get({f['name']!r}, {f['default']!r})" if "default" in f else f"{r}[{f['name']!r}]"
            v = self.name("vv") + "_"
            e = self.expr(f["type"], v, f["name"] not in UNCACHED)
            # The first use of the value is the first evaluated: bind the field there with ``:=``.
            i, uses = e.find(v), e.count(v)
            parts.append(e if i < 0 else e.replace(v, get) if uses == 1 else
                         e[:i] + f"({v} := {get})" + e[i + len(v):])
        return "b''.join((" + ", ".join(parts) + ",))"


def compile_encoder(sv: SchemaVersion) -> Encoder:
    """A function encoding a record of ``sv`` to single-object bytes (header included)."""
    c = _Compiler()
    c.ns["_H"] = sv.header
    fn = c.define("encode_", "r", "_H + " + c.record(sv.parsed, "r"))
    encode: Encoder = c.ns[fn]
    return encode


def fastavro_encoder(sv: SchemaVersion) -> Encoder:
    buf = io.BytesIO()
    parsed = sv.parsed
    header = sv.header
    write = fastavro.schemaless_writer

    def encode(record: dict[str, Any]) -> bytes:
        buf.seek(0)
        buf.truncate()
        buf.write(header)
        write(buf, parsed, record)
        return buf.getvalue()

    return encode


def encoders(stems: list[str] | None = None) -> dict[str, Encoder]:
    """Compiled encoders by stem (fastavro where a schema cannot be compiled)."""
    out: dict[str, Encoder] = {}
    for stem, sv in store().current.items():
        if stems is not None and stem not in stems:
            continue
        try:
            out[stem] = compile_encoder(sv)
        except Unsupported:
            out[stem] = fastavro_encoder(sv)
    return out
