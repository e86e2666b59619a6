"""People's names for the documented fields (``person_name`` in person signals and ``anomaly_detected`` messages),
read from the compacted ``<ns>.ref.people`` topic: Postgres has no table of people.

:class:`PeopleDirectory` reads the whole topic in a worker thread at start-up and every ``refresh_s`` (latest record
per key; a tombstone removes its key; undecodable records are skipped and counted). Lookups are dictionary reads on
the event loop, never I/O. At most ``max_people`` names are kept (records beyond are counted in ``dropped``), and a
name is cut to 200 characters: the topic's producers choose both.
"""

from __future__ import annotations

import asyncio
import logging

from confluent_kafka import KafkaException

from gateway.compacted import read_to_end
from schemas.serde import DecodeError, SchemaStore
from schemas.topics import topic

__all__ = ["PeopleDirectory"]

log = logging.getLogger("nocstream.gateway.people")
MAX_NAME = 200


class PeopleDirectory:
    def __init__(self, bootstrap: str, namespace: str, max_people: int = 200_000, timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.topic = topic("ref.people", namespace)
        self.max_people = max_people
        self.timeout_s = timeout_s
        self.rejected = 0
        self.dropped = 0
        self._names: dict[tuple[int, str], str] = {}
        self._schemas = SchemaStore()

    def name(self, tenant_id: int, person_id: str | None) -> str | None:
        return None if person_id is None else self._names.get((tenant_id, person_id))

    async def refresh(self) -> None:
        try:
            self._names, self.rejected, self.dropped = await asyncio.to_thread(self._read)
        except (KafkaException, TimeoutError) as exc:
            log.warning("%s not read (names keep their last copy): %s", self.topic, exc)

    async def refresh_every(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.refresh()

    def _read(self) -> tuple[dict[tuple[int, str], str], int, int]:
        by_key: dict[bytes, tuple[int, str, str]] = {}
        rejected = dropped = 0

        def apply(key: bytes, value: bytes | None) -> None:
            nonlocal rejected, dropped
            if value is None:
                by_key.pop(key, None)
                return
            try:
                _, rec = self._schemas.decode(value, expected="person")
            except DecodeError:
                rejected += 1
                return
            name, person_id, tenant_id = rec.get("name"), rec.get("person_id"), rec.get("tenant_id")
            if not (isinstance(name, str) and isinstance(person_id, str) and isinstance(tenant_id, int)):
                rejected += 1
                return
            if key not in by_key and len(by_key) >= self.max_people:
                dropped += 1
                return
            by_key[key] = (tenant_id, person_id, name[:MAX_NAME])

        read_to_end(self.bootstrap, self.topic, self.timeout_s, apply)
        if rejected or dropped:
            log.warning("%s: %d record(s) undecodable or unusable, %d over the %d-name bound", self.topic, rejected,
                        dropped, self.max_people)
        return {(t, p): n for t, p, n in by_key.values()}, rejected, dropped
