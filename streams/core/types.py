"""Types shared by the core components and the edges that drive them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Out:
    """One record a component wants produced: the catalogue short name of the topic (``"anomalies"``), the
    partition key, the schema stem, and the record. Edges encode and produce it; tests just look at it."""

    topic: str
    key: bytes
    stem: str
    record: Record
