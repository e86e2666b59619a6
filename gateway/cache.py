"""The 60-second response cache of read endpoints, keyed by (tenant, path, normalised query)."""

from __future__ import annotations

import time
from collections import OrderedDict


class TTLCache:
    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self.ttl = ttl_s
        self.max = max_entries
        self._data: OrderedDict[tuple[int, str, str], tuple[float, bytes]] = OrderedDict()

    def get(self, key: tuple[int, str, str]) -> bytes | None:
        hit = self._data.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self._data[key]
            return None
        return hit[1]

    def put(self, key: tuple[int, str, str], value: bytes) -> None:
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max:
            self._data.popitem(last=False)

    def invalidate_tenant(self, tenant_id: int) -> None:
        for key in [k for k in self._data if k[0] == tenant_id]:
            del self._data[key]
