"""``/api/v2/noc/session``: sign in (POST, with the token as bearer), who am I (GET), sign out (DELETE).

See :mod:`gateway.sessions` for the cookie and what ends a session.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from gateway import api, auth
from gateway.sessions import SessionStore, cookie_header, session_from_headers
from gateway.tokens import Principal

__all__ = ["session"]


def _me(p: Principal) -> dict[str, object]:
    return {"tenant_id": p.tenant_id, "token_id": p.token_id, "capabilities": sorted(p.capabilities)}


async def session(request: Request) -> Response:
    try:
        return await _session(request)
    except api.ApiError as exc:
        return api.error_response(exc.status, exc.message, exc.headers)
    except (psycopg.OperationalError, PoolTimeout, TimeoutError):
        return api.error_response(503, "database unavailable")


async def _session(request: Request) -> Response:
    state = request.app.state
    store: SessionStore = state.sessions
    secure = request.url.scheme == "https"
    if request.method == "POST":
        token = auth.bearer_from_headers(request.headers)
        if token is None:
            raise api.ApiError(401, "sign in with Authorization: Bearer <token>")
        principal = await api.authenticate(request, "noc:view")
        value, expires = await store.create(token)
        body = api.dumps({"status": "success", "cached": False, "data": {**_me(principal), "expires_at": expires}})
        return Response(body, media_type=api.JSON,
                        headers={"set-cookie": cookie_header(value, int(store.ttl_s), secure)})
    if request.method == "DELETE":
        current = session_from_headers(request.headers)
        if current is not None:
            if not api.same_origin(request):
                raise api.ApiError(403, "cross-origin request refused (session cookie without an allowed Origin)")
            await store.delete(current)
            state.verifier.forget_session(current)
        return Response(b'{"status":"success","cached":false,"data":{"signed_out":true}}', media_type=api.JSON,
                        headers={"set-cookie": cookie_header("", 0, secure)})
    principal = await api.authenticate(request, "noc:view")
    return Response(api.dumps({"status": "success", "cached": False, "data": _me(principal)}), media_type=api.JSON)


