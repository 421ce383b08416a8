"""hypercorn's trio worker with a cheaper socket layer per request (issue 22).

Why: a bare ASGI app on hypercorn's trio worker cost ~2.4 × the CPU per request
of the same app on its asyncio (uvloop) worker, and ~5 × a minimal trio + h11
server (bench/edge_floor.py; the numbers are in
docs/upstream/hypercorn-trio-per-request-cost.md). trio itself is not
the cost: counted with a trio Instrument, hypercorn's thin trio layer
(``hypercorn/trio/tcp_server.py``, ``task_group.py``, ``worker_context.py``)
makes ~17 trips through trio's scheduler and spawns ~2.1 tasks per keep-alive
request, where the raw trio + h11 server makes 2 and spawns none:

- the keep-alive timeout is a *task* (``TrioSingleTask``): every request stops
  it (a ``trio.Lock`` acquired, the task cancelled, woken and reaped) and every
  idle period starts a new one (the lock again, ``nursery.start``: a task spawned
  and a round trip to its ``started()``);
- every write (``RawData``: the response head, each body chunk, and the empty
  chunk that ends a ``Content-Length`` body) acquires ``send_lock`` and goes
  through ``send_all``: two scheduler trips each, three writes per response;
- every message to the app (``http.request``, ``http.disconnect``) goes through
  a memory channel whose ``send``/``receive`` yield to the scheduler even when
  they need not wait.

What this module changes (hypercorn's protocol classes, h11 and the ASGI
semantics are untouched; only the three pieces above, in a ``TCPServer``
subclass installed as ``hypercorn.trio.run.TCPServer``):

- the keep-alive timeout is the *deadline of the read* the connection is
  waiting in when idle (no task, no lock): set to ``now + keep_alive_timeout``
  when hypercorn reports the connection idle, to infinity when a request
  starts; when it passes, the read loop ends and the connection is closed as
  hypercorn's idle task closes it. On graceful shutdown (the worker context's
  ``terminated``), one task per hypercorn server closes the idle connections at once, as
  hypercorn's idle tasks do;
- a write is first tried directly on the non-blocking socket; only what the
  kernel does not take at once (or an error) goes hypercorn's way (the lock
  and a shielded ``send_all``, which waits, and reports a broken connection to
  the protocol). Empty writes are dropped;
- the app's message queue is the same bounded memory channel, used without a
  scheduler trip when it need not wait (``send_nowait``/``receive_nowait``
  first; a cancelled caller still gets ``Cancelled``).

And :func:`config` gives hypercorn's ``Config`` with the ``Date`` header formatted
once a second instead of once a response (``wsgiref``'s ``format_date_time``:
~3 % of a bare request's CPU in the profile).

Measured (busy machine, docs/upstream/hypercorn-trio-per-request-cost.md): the
bare app 1,294 → 557 µs of CPU per request; Paycast's whole server, main vs
this, alternated: ``GET /healthz`` 2,445 → 1,562 µs (bench/edge_floor.py) and
2,904 → 1,869 µs, a signed webhook stored 4,500 → 2,406 µs
(bench/bench_compare.py, medians of 3).

A write thus no longer yields to other tasks when the kernel takes it at once
(as asyncio's ``transport.write`` does not); every request still crosses the
scheduler when it waits for its next bytes.

:func:`install` checks that hypercorn looks as expected (0.18's trio worker) and
otherwise leaves it alone with a warning. Upstream text:
docs/upstream/hypercorn-trio-per-request-cost.md.
"""

from __future__ import annotations

import logging
import math
import os
import time
import weakref
from wsgiref.handlers import format_date_time

import trio
from hypercorn.config import Config

log = logging.getLogger("paycast.http")


class _EdgeConfig(Config):
    _date_second = -1
    _date = b""

    def response_headers(self, protocol: str) -> list[tuple[bytes, bytes]]:
        if not self.include_date_header or self.alt_svc_headers or self._quic_addresses:
            return super().response_headers(protocol)
        second = int(time.time())
        if second != self._date_second:
            self._date, self._date_second = format_date_time(second).encode("ascii"), second
        headers = [(b"date", self._date)]
        if self.include_server_header:
            headers.append((b"server", f"hypercorn-{protocol}".encode("ascii")))
        return headers


def config() -> Config:
    """A hypercorn ``Config`` whose ``Date`` header is formatted once a second (the same text:
    ``format_date_time`` of the current second), unless alt-svc headers are configured."""
    return _EdgeConfig()


class _AppQueue:
    """The messages of one request to the app: hypercorn's bounded memory channel, without the
    scheduler trip of ``send``/``receive`` when neither needs to wait."""

    __slots__ = ("_receive", "_send")

    def __init__(self, size: int) -> None:
        self._send, self._receive = trio.open_memory_channel(size)

    async def put(self, message: dict) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:  # the app is behind: wait as hypercorn does
            await self._send.send(message)

    async def get(self) -> dict:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            return self._receive.receive_nowait()
        except trio.WouldBlock:
            return await self._receive.receive()


class _IdleDeadline:
    """Stands in for hypercorn's ``TrioSingleTask`` as ``TCPServer.idle_task``: hypercorn calls
    ``restart`` when the connection turns idle and ``stop`` when a request starts."""

    __slots__ = ("_server",)

    def __init__(self, server) -> None:  # an EdgeTCPServer (built by _server_class)
        self._server = server

    async def restart(self, task_group, action) -> None:
        self._server._idle()

    async def stop(self) -> None:
        self._server._busy()


# The idle connections of each hypercorn worker context, closed at once when it terminates.
_idle_by_context: weakref.WeakKeyDictionary[object, set] = weakref.WeakKeyDictionary()


async def _close_idle_on_shutdown(context, idle: set) -> None:
    try:
        await context.terminated.wait()
        for server in list(idle):
            server._expire()
    except Exception:  # pragma: no cover - a bug here must not end the trio run
        log.exception("closing idle connections on shutdown failed")


def _idle_set(context) -> set:
    idle = _idle_by_context.get(context)
    if idle is None:
        idle = _idle_by_context[context] = set()
        trio.lowlevel.spawn_system_task(_close_idle_on_shutdown, context, idle, name="http:idle-on-shutdown")
    return idle


def _server_class():
    """hypercorn's trio ``TCPServer`` subclassed as described in the module docstring."""
    from hypercorn.events import Closed, RawData
    from hypercorn.protocol import ProtocolWrapper
    from hypercorn.trio.task_group import TaskGroup, _handle
    from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
    from hypercorn.typing import ConnectionState
    from hypercorn.utils import parse_socket_addr

    class EdgeTaskGroup(TaskGroup):
        async def spawn_app(self, app, config, scope, send):
            queue = _AppQueue(config.max_app_queue_size)
            self._nursery.start_soon(_handle, app, config, scope, queue.get, send, trio.to_thread.run_sync,
                                     trio.from_thread.run)
            return queue.put

    class EdgeTCPServer(TCPServer):
        _paycast_edge = True

        def __init__(self, app, config, context, state, stream) -> None:
            super().__init__(app, config, context, state, stream)
            self.idle_task = _IdleDeadline(self)
            self._idle_deadline = math.inf
            self._read_limit = math.inf
            self._read_scope: trio.CancelScope | None = None
            # Direct writes on plain TCP only (TLS goes through the SSLStream).
            self._fast_socket = stream.socket if isinstance(stream, trio.SocketStream) else None

        async def run(self) -> None:
            # hypercorn 0.18's TCPServer.run with EdgeTaskGroup.
            try:
                try:
                    with trio.fail_after(self.config.ssl_handshake_timeout):
                        await self.stream.do_handshake()
                except (trio.BrokenResourceError, trio.TooSlowError):
                    return  # Handshake failed
                alpn_protocol = self.stream.selected_alpn_protocol()
                socket = self.stream.transport_stream.socket
                ssl = True
            except AttributeError:  # Not SSL
                alpn_protocol = "http/1.1"
                socket = self.stream.socket
                ssl = False
            try:
                client = parse_socket_addr(socket.family, socket.getpeername())
                server = parse_socket_addr(socket.family, socket.getsockname())
                async with EdgeTaskGroup() as task_group:
                    self._task_group = task_group
                    self.protocol = ProtocolWrapper(self.app, self.config, self.context, task_group,
                                                    ConnectionState(self.state), ssl, client, server,
                                                    self.protocol_send, alpn_protocol)
                    await self.protocol.initiate()
                    await self.idle_task.restart(self._task_group, self._idle_timeout)
                    await self._read_data()
            except OSError:
                pass
            finally:
                await self._close()

        async def protocol_send(self, event) -> None:
            if type(event) is RawData:
                if event.data:  # hypercorn's empty write (the end of a Content-Length body) is dropped
                    await self._write(event.data)
                return
            await super().protocol_send(event)

        async def _write(self, data: bytes) -> None:
            if self._fast_socket is not None and not self.send_lock.locked():
                try:
                    sent = os.write(self._fast_socket.fileno(), data)
                except OSError:  # full (BlockingIOError), closed or broken: hypercorn's path waits or reports it
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
            await super().protocol_send(RawData(data=data))

        async def _read_data(self) -> None:
            read_timeout = self.config.read_timeout
            while True:
                self._read_limit = trio.current_time() + read_timeout if read_timeout else math.inf
                try:
                    with trio.CancelScope(deadline=min(self._idle_deadline, self._read_limit)) as scope:
                        self._read_scope = scope
                        data = await self.stream.receive_some(MAX_RECV)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                finally:
                    self._read_scope = None
                if scope.cancelled_caught:
                    break  # idle past keep_alive_timeout (or read_timeout): closed as hypercorn's idle task does
                await self.protocol.handle(RawData(bytes(data)))
                if data == b"":
                    break
            await self.protocol.handle(Closed())

        async def _close(self) -> None:
            idle = _idle_by_context.get(self.context)
            if idle is not None:
                idle.discard(self)
            await super()._close()

        def _set_deadline(self, deadline: float) -> None:
            self._idle_deadline = deadline
            if self._read_scope is not None:
                self._read_scope.deadline = min(deadline, self._read_limit)

        def _idle(self) -> None:
            if self.context.terminated.is_set():
                self._set_deadline(-math.inf)
                return
            _idle_set(self.context).add(self)
            self._set_deadline(trio.current_time() + self.config.keep_alive_timeout)

        def _busy(self) -> None:
            idle = _idle_by_context.get(self.context)
            if idle is not None:
                idle.discard(self)
            self._set_deadline(math.inf)

        def _expire(self) -> None:
            self._set_deadline(-math.inf)

    return EdgeTCPServer


def install() -> bool:
    """Serve with :class:`EdgeTCPServer` as hypercorn's trio worker's ``TCPServer``.

    Returns:
      True when installed (or already); False, with a warning, when hypercorn does not look
      like 0.18's trio worker (then it serves as it is).
    """
    try:
        from hypercorn.trio import run as trio_run
        from hypercorn.trio import task_group, tcp_server, worker_context
    except ImportError:  # pragma: no cover - another server
        return False
    current = getattr(trio_run, "TCPServer", None)
    if getattr(current, "_paycast_edge", False):
        return True
    expected = (current is tcp_server.TCPServer and hasattr(task_group, "_handle")
                and hasattr(tcp_server, "MAX_RECV") and hasattr(worker_context, "TrioSingleTask")
                and all(hasattr(tcp_server.TCPServer, name) for name in ("protocol_send", "_read_data", "_close")))
    if not expected:
        log.warning("hypercorn's trio worker is not as expected; app.trio_edge not installed")
        return False
    trio_run.TCPServer = _server_class()
    return True
