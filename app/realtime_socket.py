"""The WebSocket as the connection actor sees it: hypercorn's ASGI
WebSocket, with a fast write path.

Why: fan-out to thousands of connections is mostly frame writing, and through
ASGI every ``websocket.send`` is one trip down hypercorn's stack (app_send →
wsproto → h11 protocol → TCP server lock, shielded scope, ``send_all``) with
several trio checkpoints: several times the CPU of one non-blocking
``os.write`` of the encoded frame, and writing many frames at once divides
that again (bench/RESULTS.md "Measurements cited by the code").

So, when hypercorn's objects are reachable and look exactly as expected, the
frames a connection has ready are encoded with the connection's own wsproto
state (in order, so even permessage-deflate stays consistent) and written in
one non-blocking ``os.write`` while hypercorn's send lock is free (nothing of
hypercorn's is half written then, and no task can interleave: there is no
await in between). Whatever the kernel does not take is written the way
hypercorn writes: under its send lock, shielded, with ``send_all``. Anything
unexpected falls back to one ASGI send per frame: same bytes, just slower.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import struct
import weakref

import trio

from actors.realtime.connection import SocketClosed

log = logging.getLogger("paycast.realtime")

try:  # hypercorn internals, used only when they look exactly as expected
    from hypercorn.protocol.events import Data
    from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
    from wsproto.connection import ConnectionState
    from wsproto.events import CloseConnection, TextMessage
    from wsproto.utilities import LocalProtocolError
except ImportError:  # pragma: no cover - another server or version
    WSStream = None  # type: ignore[assignment,misc]


@functools.lru_cache(maxsize=4096)
def text_frame(text: str) -> bytes:
    """One unmasked, unfragmented, uncompressed WebSocket text frame (RFC 6455 §5.2).

    Cached: a message fanned out to many connections is the same ``str``
    object for all of them (rendered once), so it is encoded once, and each
    further connection costs a dict lookup (a ``str`` caches its hash).
    """
    payload = text.encode()
    n = len(payload)
    if n <= 125:
        return bytes((0x81, n)) + payload
    if n <= 0xFFFF:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def _hypercorn_objects(send) -> tuple[object, object] | None:
    """hypercorn's ``WSStream`` and ``TCPServer`` behind an ASGI ``send``, if
    this is hypercorn as we know it (0.17-0.18); else None."""
    if WSStream is None:
        return None
    stream = getattr(send, "__self__", None)  # WSStream.app_send
    if not isinstance(stream, WSStream) or not all(
            hasattr(stream, a) for a in ("connection", "send", "stream_id", "state", "closed", "_send_wsproto_event")):
        return None
    protocol = getattr(stream.send, "__self__", None)  # H11Protocol.stream_send
    tcp = getattr(getattr(protocol, "send", None), "__self__", None)  # TCPServer.protocol_send
    lock = getattr(tcp, "send_lock", None)
    sock = getattr(getattr(tcp, "stream", None), "socket", None)
    if not isinstance(lock, trio.Lock) or not isinstance(getattr(tcp, "stream", None), trio.SocketStream) \
            or sock is None:
        return None
    return stream, tcp


def _tell_app_when_server_closes(stream) -> None:
    """Make hypercorn's own closes (a frame over ``websocket_max_message_size``:
    1009) reach the app at once, as a client disconnect does.

    hypercorn sends the close frame but tells the app nothing until the peer
    answers it (and never, if the peer does not), so the connection actor
    would live on until its idle timeout. A close sent while the ASGI state is
    still ``CONNECTED`` is hypercorn's own (the app's ``websocket.close`` sets
    ``CLOSED`` first); then a ``websocket.disconnect`` is queued, Quart cancels
    the handler, and the actor ends as for any disconnect.
    """
    send_event = getattr(type(stream), "_send_wsproto_event", None)
    if send_event is None or not hasattr(stream, "app_put"):
        return
    # The override lives on the stream: it holds the stream weakly and hypercorn's
    # method unbound, so that it makes no reference cycle (a cycle would keep the
    # connection's objects for the full collections, app/connection_teardown.py).
    ref = weakref.ref(stream)

    async def send_wsproto_event(event) -> None:
        stream = ref()
        if stream is None:
            return
        server_close = isinstance(event, CloseConnection) and stream.state == ASGIWebsocketState.CONNECTED
        await send_event(stream, event)
        if server_close and not stream.closed and stream.app_put is not None:
            await stream.app_put({"type": "websocket.disconnect", "code": int(event.code)})

    stream._send_wsproto_event = send_wsproto_event


class AsgiSocket:
    """An accepted ASGI WebSocket as the actor's Socket protocol.

    Args:
      receive, send: the ASGI callables of the connection.
    """

    def __init__(self, receive, send) -> None:
        self._receive = receive
        self._asgi_send = send
        found = _hypercorn_objects(send)
        self._stream, self._tcp = found if found else (None, None)
        self.fast = found is not None
        # No extension negotiated (no permessage-deflate): frames are the same
        # bytes on every connection, so they come from the shared cache.
        self.shared_frames = False
        if found is not None:
            _tell_app_when_server_closes(self._stream)
            proto = getattr(self._stream.connection, "_proto", None)
            self.shared_frames = (proto is not None and getattr(proto, "extensions", None) == []
                                  and getattr(proto, "client", True) is False)

    def write_now(self, texts: list[str]) -> bytes | None:
        """Encode and write frames without awaiting (see the module docstring).

        Returns:
          None when hypercorn is writing (or this is not hypercorn): nothing
          was done. Otherwise the bytes the kernel did not take, ``b""`` if
          all went out (also when the connection is closing or gone: hypercorn
          drops sends then too).
        """
        stream, tcp = self._stream, self._tcp
        if stream is None or tcp.send_lock.locked():
            return None
        if stream.closed or stream.state != ASGIWebsocketState.CONNECTED:
            return b""
        data = self._encode(texts)
        if data is None:
            return b""
        try:
            written = os.write(tcp.stream.socket.fileno(), data)
        except BlockingIOError:
            written = 0
        except OSError as exc:  # the peer is gone: hypercorn's reader ends the connection
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EBADF, errno.ENOTCONN):
                log.warning("realtime write failed: %s", exc)
            return b""
        return data[written:]

    async def send_raw(self, data: bytes) -> None:
        """Send encoded frames the way hypercorn writes (its lock, shielded ``send_all``)."""
        stream = self._stream
        if stream is not None and not stream.closed and data:
            await stream.send(Data(stream_id=stream.stream_id, data=data))

    async def send_many(self, texts: list[str]) -> None:
        """Send text frames in order, in as few socket writes as possible."""
        if self._stream is None:
            for text in texts:
                await self._asgi_send({"type": "websocket.send", "text": text})
            return
        rest = self.write_now(texts)
        if rest is None:  # hypercorn holds its send lock: encode now, write behind it
            stream = self._stream
            if stream.closed or stream.state != ASGIWebsocketState.CONNECTED:
                return
            rest = self._encode(texts)
            if rest is None:
                return
        await self.send_raw(rest)

    def _encode(self, texts: list[str]) -> bytes | None:
        """The frames' bytes, or None if the connection no longer sends (closing)."""
        connection = self._stream.connection
        if self.shared_frames:
            if connection.state != ConnectionState.OPEN:
                return None
            return b"".join([text_frame(text) for text in texts])
        try:  # an extension (permessage-deflate) keeps per-connection state: wsproto encodes
            return b"".join([connection.send(TextMessage(data=text)) for text in texts])
        except LocalProtocolError:
            return None

    async def receive(self) -> str | bytes:
        """The next frame from the client.

        Raises:
          SocketClosed: the client (or hypercorn) closed the connection.
        """
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.receive":
                text = message.get("text")
                return text if text is not None else message.get("bytes") or b""
            if kind == "websocket.disconnect":
                raise SocketClosed(message.get("code", 1005))

    async def close(self, code: int, reason: str = "") -> None:
        await self._asgi_send({"type": "websocket.close", "code": code, "reason": reason})
