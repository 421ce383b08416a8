"""The hub: this process's live connections, indexed by client, and the router
that turns committed-message notifications into per-connection batches.

``actor:hub`` routes: it is woken when notifications are waiting, decodes them,
reads from the database the few that were too large to travel inline (one query
for the whole burst) and offers each batch to the client's local connections.
Offering never blocks (a connection's queue is bounded); a connection that
cannot take a batch re-reads it from the database itself.

``actor:realtime-heartbeat`` visits every connection once per tick: pings,
idle timeout, slow consumers, stuck sockets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from actors.realtime.connection import Batch, Connection
from domain.errors import Unavailable
from domain.realtime import Notice, decode_notice, visible
from storage import realtime as store
from telemetry import tracing

log = logging.getLogger("paycast.realtime")
# After routing something the hub waits this long before routing again, so
# under load each connection gets several messages per wake-up and per socket
# write (one write per message per connection is what fan-out costs most).
# When idle the first notification is routed at once: no added latency.
BATCH_WINDOW_S = 0.002
# Connections the heartbeat visits between two checkpoints.
HEARTBEAT_SLICE = 500


class Hub:
    """Local connections and the router.

    Args:
      db: the database.
      settings: ping/idle intervals.
      take: returns every waiting notification payload (the LISTEN feed's).
    """

    def __init__(self, db, settings, take: Callable[[], list[str]] = list) -> None:
        self._db = db
        self._ping_s = settings.realtime_ping_s
        self._idle_s = settings.realtime_idle_timeout_s
        self._tick_s = min(1.0, settings.realtime_ping_s / 2)
        self.take = take
        self.connections: dict[str, Connection] = {}
        self._by_client: dict[tuple[str, str], list[Connection]] = {}
        self._wake = trio.Event()
        self._resync = False
        self.slow_closes = 0
        self.notices = 0
        self.fetched = 0
        self.resyncs = 0

    def __len__(self) -> int:
        return len(self.connections)

    # ------------------------------------------------------------ registry

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        self._by_client.setdefault(conn.key, []).append(conn)

    def remove(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        peers = self._by_client.get(conn.key, [])
        if conn in peers:
            peers.remove(conn)
        if not peers:
            self._by_client.pop(conn.key, None)

    def local(self, merchant_id: str, client_id: str) -> list[Connection]:
        return list(self._by_client.get((merchant_id, client_id), ()))

    def count_receivers(self, merchant_id: str, client_id: str, device_id: str | None, topic: str) -> int:
        """Local connections that will get a message for ``device_id``/``topic``."""
        return sum(1 for c in self._by_client.get((merchant_id, client_id), ())
                   if visible(c.device_id, c.muted, device_id, topic))

    def slow_consumer_closed(self) -> None:
        self.slow_closes += 1

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.connections.values()):
            conn.request_close(code, reason)

    # ------------------------------------------------------------ routing

    def wake(self) -> None:
        """Notifications are waiting (called in trio by the feed)."""
        self._wake.set()

    def request_resync(self) -> None:
        """Every connection may have missed messages: check them against the database."""
        self._resync = True
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        # After a restart (supervise) notices may have been lost: check everyone.
        self._resync = bool(self.connections)
        task_status.started()
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            payloads = self.take()
            if payloads:
                await self.route(payloads)
            if self._resync:
                self._resync = False
                await self._do_resync()
            if payloads:
                await trio.sleep(BATCH_WINDOW_S)

    async def route(self, payloads: list[str]) -> None:
        """Offer the messages of ``payloads`` to the local connections of their clients."""
        notices: list[Notice] = []
        for payload in payloads:
            try:
                notice = decode_notice(payload)
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring a malformed realtime notification")
                continue
            self.notices += 1
            if (notice.merchant_id, notice.client_id) in self._by_client:
                notices.append(notice)
        missing = [(n.merchant_id, n.client_id, n.first, n.last) for n in notices if n.messages is None]
        fetched: dict[tuple[str, str], list] = {}
        if missing:
            try:
                fetched = await self._db.transaction(store.read_ranges, missing)
                self.fetched += len(missing)
            except Unavailable:
                # The connections notice the gap with their next batch, or on resync.
                log.warning("could not read %d realtime batches; connections will catch up", len(missing))
        for notice in notices:
            key = (notice.merchant_id, notice.client_id)
            messages = notice.messages
            if messages is None:
                messages = tuple(m for m in fetched.get(key, ()) if notice.first <= m.seq <= notice.last)
                if len(messages) != notice.last - notice.first + 1:
                    for conn in self._by_client.get(key, ()):
                        conn.catch_up()
                    continue
            batch = Batch(notice.first, notice.last, messages)
            targets = self._by_client.get(key, ())
            # The push joins the trace of the transaction that wrote the messages.
            with tracing.span("realtime push", {"paycast.realtime.connections": len(targets),
                                                "paycast.realtime.messages": len(messages)},
                              parent=tracing.from_traceparent(notice.traceparent)):
                for conn in targets:
                    try:
                        conn.offer(batch)
                    except Exception:  # noqa: BLE001 - one connection's trouble must not stop routing
                        log.exception("offering to realtime connection %s failed", conn.id)
                        conn.catch_up()

    async def _do_resync(self) -> None:
        """Compare each local client's cursor with its latest seq; lagging ones re-read."""
        self.resyncs += 1
        keys = list(self._by_client)
        if not keys:
            return
        try:
            latest = await self._db.transaction(store.last_seqs, keys)
        except Unavailable:
            log.warning("realtime resync could not read the database; every connection catches up")
            latest = None
        for key in keys:
            for conn in self._by_client.get(key, ()):
                if latest is None or conn.cursor < latest.get(key, 0):
                    conn.catch_up()

    # ------------------------------------------------------------ heartbeat

    async def heartbeat(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self._tick_s)
            now = trio.current_time()
            for i, conn in enumerate(list(self.connections.values())):
                conn.check(now, self._ping_s, self._idle_s)
                if i % HEARTBEAT_SLICE == HEARTBEAT_SLICE - 1:
                    # Tens of thousands of visits would hold the loop for tens of
                    # milliseconds: let requests and deliveries in between slices.
                    await trio.lowlevel.checkpoint()
