"""Response headers every HTTP answer of the gateway carries (an ASGI middleware, outermost but one).

- Security headers on every response, HTML pages and ``/static/*`` included: a Content-Security-Policy that
  allows only this origin (no inline script, WebSocket to this host), no framing (``frame-ancestors 'none'`` and
  ``X-Frame-Options: DENY``), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``.
- On ``/api/`` answers (all of them depend on who asks): ``Cache-Control: no-store`` and
  ``Vary: Authorization, Cookie``, so no browser or proxy cache keeps one caller's data for another. The
  gateway's own 60 s cache is keyed by tenant (see api.py).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CSP", "SecurityHeaders"]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")
_ALWAYS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
_PRIVATE = [(b"cache-control", b"no-store"), (b"vary", b"Authorization, Cookie")]
_REPLACED = {name for name, _ in _ALWAYS + _PRIVATE}


class SecurityHeaders:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = _ALWAYS + _PRIVATE if scope.get("path", "").startswith("/api/") else _ALWAYS

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _REPLACED]
                message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)
