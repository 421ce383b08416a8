"""PostgreSQL LISTEN on a dedicated asyncpg connection, bridged into trio.

The connection lives on the database's asyncio loop thread (asyncpg is asyncio
only, docs/architecture.md decision 1). asyncpg calls our notification callback on that
thread; the payload is put in a thread-safe deque and trio is woken through its
token, once per burst rather than once per notification.

LISTEN/NOTIFY has no back-pressure and forgets everything sent while nobody
listens, so this class only *signals*: the deque is bounded (an overflow is
counted, and the owner then re-reads from the database), and a lost connection
is reported so the owner reconnects and re-reads what it may have missed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

import asyncpg
import trio

from storage.loop_thread import LoopThread

log = logging.getLogger("paycast.listener")
# Payloads are < 8000 bytes each; this bounds the buffer whatever their size.
MAX_PENDING_BYTES = 32 * 1024 * 1024


class Listener:
    """One LISTEN connection on ``channel``.

    Args:
      loop: the database's loop thread.
      dsn: where to connect.
      channel: the notification channel.
      max_pending: notifications kept while trio has not taken them (also at
        most :data:`MAX_PENDING_BYTES`); beyond that they are dropped and
        :attr:`overflows` counts it.
      timeout_s: limit on connecting and on each health check.
    """

    def __init__(self, loop: LoopThread, dsn: str, channel: str, *, max_pending: int, timeout_s: float) -> None:
        self._loop = loop
        self._dsn = dsn
        self._channel = channel
        self._max_pending = max_pending
        self._timeout_s = timeout_s
        self._pending: collections.deque[str] = collections.deque()
        self._pending_bytes = 0
        self._conn: asyncpg.Connection | None = None
        self._wake_scheduled = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._on_wake: Callable[[], None] = lambda: None
        self._on_lost: Callable[[], None] = lambda: None
        # Written on the loop thread only; the trio side compares it with what it saw.
        self.overflows = 0
        self.received = 0

    async def connect(self, on_wake: Callable[[], None], on_lost: Callable[[], None]) -> int:
        """Open the connection and LISTEN (from trio).

        Args:
          on_wake: called in trio when notifications are waiting in :meth:`take`.
          on_lost: called in trio when the connection terminates.

        Returns:
          The listening backend's pid.

        Raises:
          Exception: connecting failed (OSError, asyncpg errors, TimeoutError).
        """
        self._token = trio.lowlevel.current_trio_token()
        self._on_wake, self._on_lost = on_wake, on_lost

        async def open_and_listen() -> asyncpg.Connection:
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout_s,
                                         server_settings={"application_name": "paycast-listener"})
            try:
                await conn.add_listener(self._channel, self._notified)
                conn.add_termination_listener(self._terminated)
            except BaseException:
                conn.terminate()
                raise
            return conn

        self._conn = await self._loop.run(asyncio.wait_for(open_and_listen(), self._timeout_s * 2))
        return self._conn.get_server_pid()

    def _call_trio(self, fn: Callable[[], None]) -> None:
        try:
            assert self._token is not None
            self._token.run_sync_soon(fn)
        except trio.RunFinishedError:  # trio already gone: nobody to tell
            pass

    def _notified(self, _conn, _pid, _channel, payload: str) -> None:
        # On the loop thread.
        self.received += 1
        if len(self._pending) >= self._max_pending or self._pending_bytes > MAX_PENDING_BYTES:
            self._pending.clear()
            self._pending_bytes = 0
            self.overflows += 1
        self._pending.append(payload)
        self._pending_bytes += len(payload)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._call_trio(self._on_wake)

    def _terminated(self, conn) -> None:
        # On the loop thread; also called after our own close (harmless).
        if conn is self._conn:
            self._call_trio(self._on_lost)

    def take(self) -> list[str]:
        """Every waiting payload, oldest first (from trio)."""
        self._wake_scheduled = False
        out = []
        pending = self._pending
        while True:  # the loop thread may clear it meanwhile (overflow): no check-then-pop
            try:
                out.append(pending.popleft())
            except IndexError:
                break
        # Approximate under a race with the loop thread; it only bounds memory.
        self._pending_bytes = 0
        return out

    async def check(self) -> bool:
        """A round trip on the listening connection; False if it is gone or stuck."""
        conn = self._conn
        if conn is None or conn.is_closed():
            return False

        async def ping() -> None:
            await conn.fetchval("SELECT 1")

        try:
            await self._loop.run(asyncio.wait_for(ping(), self._timeout_s))
            return True
        except Exception as exc:  # noqa: BLE001 - any failure means "reconnect"
            log.warning("realtime listener check failed: %s: %s", type(exc).__name__, exc)
            return False

    async def close(self) -> None:
        """Close the connection (bounded; terminated if it does not close in time)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return

        async def shut() -> None:
            try:
                await asyncio.wait_for(conn.close(), self._timeout_s)
            except Exception:  # noqa: BLE001 - closing is best effort
                conn.terminate()

        await self._loop.run(shut())
