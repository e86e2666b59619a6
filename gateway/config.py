"""Gateway settings: environment variables with local-first defaults (see infra/config.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from infra.config import settings


def _origins() -> tuple[str, ...]:
    raw = os.environ.get("NOC_GATEWAY_ORIGINS", "")
    return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


@dataclass(frozen=True)
class GatewayConfig:
    dsn: str = field(default_factory=lambda: settings().pg_dsn)
    bootstrap: str = field(default_factory=lambda: settings().bootstrap)
    namespace: str = field(default_factory=lambda: settings().namespace)
    # Browser origins allowed to open the WebSocket. The gateway's own origin is always allowed (see ws.py).
    allowed_origins: tuple[str, ...] = field(default_factory=_origins)
    cache_ttl_s: float = 60.0
    cache_max_entries: int = 10_000
    ring_size: int = 2_000  # events kept per tenant for resume
    resume_max_events: int = 10_000  # most events a resume reads back from Kafka
    client_queue_max: int = 1_000  # events buffered per client before it is closed as too slow
    heartbeat_s: float = 15.0
    token_cache_s: float = 30.0  # how long a token lookup is trusted (so revocation takes up to this long)
    token_recheck_s: float = 30.0  # an open WebSocket is closed (4401) once its token is revoked or expired
    # WebSocket frames per second this process aims to stay under: a tick lasts at least clients/budget seconds,
    # coalescing the events that arrive meanwhile (1,000 clients -> one frame per client per 50 ms at most).
    ws_frame_budget: int = field(default_factory=lambda: int(os.environ.get("NOC_GATEWAY_FRAME_BUDGET") or 20_000))
    # The live feed goes out in ticks: the events of one tick share one frame per (tenant, filters) group, encoded
    # once and written to every caught-up client. The first event after a quiet tick goes out at once.
    ws_tick_s: float = field(default_factory=lambda: float(os.environ.get("NOC_GATEWAY_TICK_MS") or 2) / 1000)
    max_ws_message_bytes: int = 4_096
    db_timeout_s: float = 5.0
    pool_min: int = 8  # open them all at start-up: a connection opened under load costs its request ~10-50 ms
    pool_max: int = 8
    # Consumer: each process reads every partition by manual assignment under its own group id.
    group_id: str | None = None
    start_consumer: bool = True
    lag_poll_s: float = 15.0
    # Garbage collector (see gc_pauses.py): freeze live objects this often (0: leave the collector as it is),
    # and unfreeze + collect everything once per sweep.
    gc_freeze_every_s: float = 10.0
    gc_sweep_every_s: float = 600.0
