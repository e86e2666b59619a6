"""Dashboard sessions: a cookie standing for a token, so the page (and code typed into its console) never holds one.

``POST /api/v2/noc/session`` with ``Authorization: Bearer <token>`` creates a session and sets the cookie
``noc_session``: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's request carries it),
``Secure`` when the gateway is reached over TLS, ``Path=/``, ``Max-Age`` = ``session_ttl_s`` (8 h). The session has the
token's tenant and capabilities, and its limits (requests per token, WebSocket connections per token); it ends
when the token is revoked or expires (within the 30 s verification cache, like the token), when it expires, or at
``DELETE /api/v2/noc/session`` (sign-out: the row is deleted and the cookie cleared). ``GET`` says who is signed in.

Cookie-authenticated requests that change something, and cookie-authenticated WebSocket handshakes, must carry an
``Origin`` that is the gateway's own or allowed (``NOC_GATEWAY_ORIGINS``): a cookie is sent by the browser on its
own, so the origin check is not optional for them.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from psycopg_pool import AsyncConnectionPool
from starlette.datastructures import Headers

from gateway.tokens import hash_token

__all__ = ["COOKIE", "SessionStore", "cookie_header", "session_from_headers"]

COOKIE = "noc_session"
MAX_PER_TOKEN = 20


def session_from_headers(headers: Headers) -> str | None:
    """The session cookie's value, if one that could be ours is sent (no lookup)."""
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and 20 <= len(value) <= 100 and all(c.isascii() and (c.isalnum() or c in "-_")
                                                               for c in value):
            return value
    return None


def cookie_header(value: str, max_age_s: int, secure: bool) -> str:
    """A ``Set-Cookie`` value; ``max_age_s`` 0 clears the cookie."""
    parts = [f"{COOKIE}={value}", "Path=/", f"Max-Age={max_age_s}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


class SessionStore:
    def __init__(self, pool: AsyncConnectionPool, ttl_s: float) -> None:
        self._pool = pool
        self.ttl_s = ttl_s

    async def create(self, token: str) -> tuple[str, datetime]:
        """A new session for ``token`` (already verified); returns (cookie value, expiry)."""
        value = secrets.token_urlsafe(32)
        async with self._pool.connection() as conn:
            await conn.execute("DELETE FROM gateway_sessions WHERE expires_at < now()")  # expired ones go here
            cur = await conn.execute(
                "INSERT INTO gateway_sessions (session_hash, token_hash, expires_at) "
                "VALUES (%s, %s, now() + %s * interval '1 s') RETURNING expires_at",
                (hash_token(value), hash_token(token), self.ttl_s))
            row = await cur.fetchone()
            # At most MAX_PER_TOKEN live sessions per token (the oldest go): signing in in a loop stays bounded.
            await conn.execute(
                "DELETE FROM gateway_sessions WHERE token_hash = %s AND session_hash NOT IN (SELECT session_hash "
                "FROM gateway_sessions WHERE token_hash = %s ORDER BY created_at DESC LIMIT %s)",
                (hash_token(token), hash_token(token), MAX_PER_TOKEN))
        assert row is not None
        return value, row[0]

    async def delete(self, value: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute("DELETE FROM gateway_sessions WHERE session_hash = %s", (hash_token(value),))
