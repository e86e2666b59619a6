"""The rate limits every REST request and WebSocket handshake goes through (buckets from :mod:`gateway.limits`).

- per client address, on every request (before anything else is looked at);
- per client address and per presented token, on failed authentications: once either bucket is empty, the
  address (or that token) gets 429 without a database lookup until it refills;
- per token, on every authenticated request.

The address is the peer of the TCP connection (``X-Forwarded-For`` is not trusted: behind a proxy every client
shares the proxy's bucket, so raise ``requests_per_address`` there).
"""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.limits import RateLimiter
from gateway.tokens import hash_token

__all__ = ["Guard"]


class Guard:
    def __init__(self, cfg: GatewayConfig) -> None:
        n = cfg.limiter_max_keys
        self.per_address = RateLimiter(*cfg.requests_per_address, max_keys=n)
        self.per_token = RateLimiter(*cfg.requests_per_token, max_keys=n)
        self.failures_per_address = RateLimiter(*cfg.auth_failures_per_address, max_keys=n)
        self.failures_per_token = RateLimiter(*cfg.auth_failures_per_token, max_keys=n)

    def before_auth(self, address: str, token: str | None) -> tuple[float, str]:
        """Seconds to wait (0: go on) and why, before the token is looked up."""
        wait = self.per_address.take(address)
        if wait:
            return wait, "too many requests from this address"
        wait = self.failures_per_address.blocked(address)
        if wait:
            return wait, "too many failed authentications from this address"
        if token:
            wait = self.failures_per_token.blocked(hash_token(token[:300]))
            if wait:
                return wait, "too many failed authentications with this token"
        return 0.0, ""

    def auth_failed(self, address: str, token: str | None) -> None:
        self.failures_per_address.take(address)
        if token:
            self.failures_per_token.take(hash_token(token[:300]))

    def after_auth(self, token_id: str) -> float:
        return self.per_token.take(token_id)
