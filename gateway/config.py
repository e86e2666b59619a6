"""Gateway settings: environment variables with local-first defaults (see infra/config.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from infra.config import settings


def _origins() -> tuple[str, ...]:
    raw = os.environ.get("NOC_GATEWAY_ORIGINS", "")
    return tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())


def _rate(name: str, default: tuple[float, float]) -> tuple[float, float]:
    """A (rate per second, burst) pair from ``name``: "rate,burst", or "0" to turn the limit off."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    rate, _, burst = raw.partition(",")
    return float(rate), float(burst or rate)


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
    # Hostile clients (see limits.py and the README's "Limits"): token buckets per token and per client address,
    # each a (rate per second, burst) pair; 0 as the rate turns one off.
    requests_per_token: tuple[float, float] = field(
        default_factory=lambda: _rate("NOC_GATEWAY_REQUESTS_PER_TOKEN", (100.0, 400.0)))
    requests_per_address: tuple[float, float] = field(
        default_factory=lambda: _rate("NOC_GATEWAY_REQUESTS_PER_ADDRESS", (200.0, 800.0)))
    auth_failures_per_address: tuple[float, float] = (0.5, 20.0)  # failed authentications (401) per address
    auth_failures_per_token: tuple[float, float] = (0.2, 5.0)  # failures presenting the same unknown token
    ws_connections_per_token: int = field(
        default_factory=lambda: int(os.environ.get("NOC_GATEWAY_WS_PER_TOKEN") or 20))
    ws_messages_per_s: tuple[float, float] = field(  # inbound WebSocket messages per connection
        default_factory=lambda: _rate("NOC_GATEWAY_WS_MESSAGES_PER_S", (10.0, 40.0)))
    client_queue_max_bytes: int = 4 * 1024 * 1024  # a client's queued events, by bytes (besides the count)
    control_queue_max: int = 64  # replies (pong, subscribed) waiting for a client that does not read
    ws_stalled_close_s: float = 10.0  # a client whose socket stays full this long is closed with 4008
    ring_max_bytes: int = 8 * 1024 * 1024  # a tenant's resume ring, by bytes (besides ring_size)
    max_tenants: int = 10_000  # tenants with a ring; only tenants that have a token get one
    tenants_refresh_s: float = 30.0
    idempotency_ttl_s: float = 86_400.0  # how long a ticket change's Idempotency-Key is remembered
    session_ttl_s: float = 8 * 3600.0  # dashboard session cookie lifetime
    people_refresh_s: float = 60.0  # how often people's names are read again from ref.people
    limiter_max_keys: int = 50_000  # keys (tokens, addresses) each rate limiter remembers
