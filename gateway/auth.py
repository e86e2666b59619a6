"""Where a request's bearer token comes from, and the Origin allow-list of the WebSocket.

REST: ``Authorization: Bearer <token>``. WebSocket: the same header (non-browser clients) or, since browsers
cannot set headers on a WebSocket, the subprotocol list ``["noc.v1", "bearer.<token>"]``; the server then
accepts ``noc.v1`` and never echoes the token. A token in the query string is never read: URLs end up in logs.
"""

from __future__ import annotations

from starlette.datastructures import Headers

SUBPROTOCOL = "noc.v1"
BEARER_PROTOCOL_PREFIX = "bearer."


def bearer_from_headers(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def offered_subprotocols(headers: Headers) -> list[str]:
    return [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def bearer_from_subprotocols(protocols: list[str]) -> str | None:
    for p in protocols:
        if p.startswith(BEARER_PROTOCOL_PREFIX):
            return p[len(BEARER_PROTOCOL_PREFIX):]
    return None


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...], secure: bool) -> bool:
    """Browsers always send Origin on a WebSocket handshake, so a cross-site page is refused here.

    Clients that are not browsers send none and are let through (they still need a token). The gateway's own
    origin (the page it serves) is always allowed.
    """
    if origin is None:
        return True
    origin = origin.rstrip("/")
    if "*" in allowed or origin in allowed:
        return True
    return host is not None and origin == f"{'https' if secure else 'http'}://{host}"
