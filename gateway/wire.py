"""The cheapest way to put an already-framed WebSocket message on a client's socket.

The ASGI ``send`` path encodes each message again per client (text -> bytes -> frame, through the server's
protocol object and an ``await``). The fan-out sends the *same* frame to many clients, so it frames it once
(:func:`gateway.hub.ws_text_frame`) and writes those bytes to each client's transport. That needs uvicorn's
sans-I/O websockets protocol (``--ws auto`` picks it when ``websockets`` is installed); with any other server
or implementation :func:`raw_writer` returns None and the gateway uses the ASGI path for everything.

A raw write happens only between whole frames (the protocol object writes whole frames too), never after the
close handshake began, and never while the transport is paused for flow control: a client whose socket is full
is left to the ASGI path, which waits for it, and to the bounded queue that closes it with 4008.
"""

from __future__ import annotations

from typing import Any

from starlette.websockets import WebSocket

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.protocol import State
except ImportError:  # pragma: no cover - the gateway then always uses the ASGI send path
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]


class RawWriter:
    __slots__ = ("_open", "_proto", "_transport")

    def __init__(self, proto: Any) -> None:
        self._proto = proto
        self._transport = proto.transport
        self._open = State.OPEN

    def write(self, wire: bytes) -> bool:
        """Write one complete frame now; False if the socket cannot take it (closing, or paused when full)."""
        p = self._proto
        if (p.close_sent or not p.handshake_complete or p.conn.state is not self._open
                or not p.writable.is_set() or self._transport.is_closing()):
            return False
        self._transport.write(wire)
        return True

    async def writable(self) -> None:
        """Wait until the transport takes data again (flow control), as the ASGI send path would."""
        await self._proto.writable.wait()

    def is_writable(self) -> bool:
        return bool(self._proto.writable.is_set())

    def buffered(self) -> int:
        """Bytes written to the socket's buffer that the client has not taken yet."""
        return int(self._transport.get_write_buffer_size())

    def abort_if_stuck(self) -> None:
        """Drop the TCP connection unless it is closed already with nothing left to send."""
        if not self._transport.is_closing() or self._transport.get_write_buffer_size():
            self._transport.abort()


SCOPE_KEY = "nocstream.server_send"


class ExposeServerSend:
    """ASGI middleware (outermost): keeps the server's own ``send`` of a WebSocket in the scope, before Starlette
    wraps it, so :func:`raw_writer` can find the protocol object behind it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope[SCOPE_KEY] = send
        await self.app(scope, receive, send)


def raw_writer(ws: WebSocket) -> RawWriter | None:
    """A raw writer for this connection, or None when the server is not one we know how to write to."""
    if WebSocketsSansIOProtocol is None:
        return None
    # uvicorn's ASGI send callable is a bound method of the connection's protocol object
    proto = getattr(ws.scope.get(SCOPE_KEY), "__self__", None)
    if not isinstance(proto, WebSocketsSansIOProtocol) or getattr(proto, "transport", None) is None:
        return None
    return RawWriter(proto)
