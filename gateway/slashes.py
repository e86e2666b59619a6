"""Trailing slashes: ``/api/v2/noc/incidents/`` and ``/api/v2/noc/incidents`` are the same resource.

The runbook of the deployment nocstream replaces documents every REST path and the WebSocket with a trailing
slash; clients that do not follow redirects (``curl`` without ``-L``, browsers' WebSocket constructor, scripts)
must get the answer itself, not a 307. This ASGI middleware strips trailing slashes from ``/api/`` and ``/ws/``
paths before routing, so every route answers both ways with no redirect, and the response cache sees one path.
"""

from __future__ import annotations

from typing import Any

__all__ = ["StripTrailingSlash"]

_PREFIXES = ("/api/", "/ws/")


class StripTrailingSlash:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope.get("path", "")
            if len(path) > 1 and path.endswith("/") and path.startswith(_PREFIXES):
                stripped = path.rstrip("/") or "/"
                scope = {**scope, "path": stripped}
                raw = scope.get("raw_path")
                if isinstance(raw, bytes | bytearray):
                    scope["raw_path"] = bytes(raw).rstrip(b"/") or b"/"
        await self.app(scope, receive, send)
