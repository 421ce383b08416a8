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
from typing import Protocol

import trio

from actors.realtime.connection import Connection
from domain.realtime_delivery import assemble, gaps
from domain.errors import Unavailable
from domain.realtime import Message, Notice, Revoke, decode_notice
from storage import realtime as store
from telemetry import tracing

log = logging.getLogger("paycast.realtime")
# After routing something the hub waits this long before routing again, so
# under load each connection gets several messages per wake-up and per socket
# write (one write per message per connection is what fan-out costs most).
# When idle the first notification is routed at once: no added latency.
BATCH_WINDOW_S = 0.002
# This often the hub checks its clients' cursors against the database (one
# query): notifications are sent after commit, so one can be lost (a crash
# between commit and send) and a connection would otherwise wait for its
# client's next message to notice.
RESYNC_EVERY_S = 5.0
# Clients per query of that check. It runs in its own task, so routing never
# waits for it; chunks keep each query and each pass over the answer short.
RESYNC_CHUNK = 1000
# Connections the heartbeat visits between two checkpoints.
HEARTBEAT_SLICE = 500
# The heartbeat's tick is cut into this many steps, each visiting every
# PHASES-th connection: what a visit starts (pings, and the pongs coming back)
# arrives in small batches spread over the tick instead of one burst per tick
# (one burst per tick held the loop; bench/RESULTS.md "Measurements cited by the code").
HEARTBEAT_PHASES = 10


class Notifications(Protocol):
    """Where the hub takes committed-message notifications from (the LISTEN feed)."""

    def take(self) -> list[str]:
        """Every waiting notification payload."""

    def missed(self) -> bool:
        """Whether notifications were dropped since the last call (every connection must re-read)."""


class _NoFeed:
    def take(self) -> list[str]:
        return []

    def missed(self) -> bool:
        return False


def _ignore_revoke(merchant_id: str, client_id: str, device_id: str) -> None:
    pass


class Hub:
    """Local connections and the router.

    Args:
      db: the database.
      settings: ping/idle intervals.
      feed: where the waiting notification payloads come from (the LISTEN feed,
        :class:`actors.realtime.feed.Feed`); default none.
      on_revoke: called with (merchant, client, device) when a device was deleted
        (by any process); default nothing.
    """

    def __init__(self, db, settings, feed: Notifications | None = None,
                 on_revoke: Callable[[str, str, str], None] | None = None) -> None:
        self._db = db
        self._ping_s = settings.realtime_ping_s
        self._idle_s = settings.realtime_idle_timeout_s
        self._tick_s = min(1.0, settings.realtime_ping_s / 2)
        self._feed: Notifications = feed if feed is not None else _NoFeed()
        self._on_revoke = on_revoke or _ignore_revoke
        self.connections: dict[str, Connection] = {}
        self._by_client: dict[tuple[str, str], list[Connection]] = {}
        self._wake = trio.Event()
        self._resync = False
        # The last seq routed to each local client's connections (gaps before a
        # later notification are read once here, not by every connection).
        self._routed: dict[tuple[str, str], int] = {}
        # Latest seqs read by the previous periodic check, by client.
        self._previous_latest: dict[tuple[str, str], int] = {}
        self.slow_closes = 0
        self.notices = 0
        self.fetched = 0
        self.resyncs = 0
        # Sockets opened by write path: "fast" (frames written on hypercorn's
        # socket directly) or "fallback" (one ASGI send per frame).
        self.sockets = {"fast": 0, "fallback": 0}

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
            self._routed.pop(conn.key, None)
            self._previous_latest.pop(conn.key, None)

    def local(self, merchant_id: str, client_id: str) -> list[Connection]:
        return list(self._by_client.get((merchant_id, client_id), ()))

    def count_receivers(self, merchant_id: str, client_id: str, device_id: str | None, topic: str) -> int:
        """Local connections that will get a message for ``device_id``/``topic``."""
        # Inlined ``visible`` (this runs over every connection of the client on each publish).
        return sum(1 for c in self._by_client.get((merchant_id, client_id), ())
                   if (device_id is None or c.device_id == device_id)
                   and (not c.delivery.muted or topic not in c.delivery.muted))

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
            payloads = self._feed.take()
            if self._feed.missed():
                self._resync = True
            if payloads:
                await self.route(payloads)
            if self._resync:
                self._resync = False
                await self._resync_all(immediate=True)
            if payloads:
                await trio.sleep(BATCH_WINDOW_S)

    async def check_cursors(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """``actor:realtime-resync``: every RESYNC_EVERY_S, every local client's
        cursor against the database, RESYNC_CHUNK clients per query."""
        task_status.started()
        while True:
            await trio.sleep(RESYNC_EVERY_S)
            await self._resync_all(immediate=False)

    async def _resync_all(self, *, immediate: bool) -> None:
        """Every local client through :meth:`_do_resync`, RESYNC_CHUNK clients per query."""
        keys = list(self._by_client)
        self.resyncs += 1
        for start in range(0, len(keys), RESYNC_CHUNK):
            if not await self._do_resync(keys[start:start + RESYNC_CHUNK], immediate=immediate):
                return  # the database is unreachable: the next pass tries again

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
            if isinstance(notice, Revoke):
                self._on_revoke(notice.merchant_id, notice.client_id, notice.device_id)
                continue
            if (notice.merchant_id, notice.client_id) in self._by_client:
                notices.append(notice)
        # Per client: the messages that came inline, and the ranges to read
        # (too large to travel inline, or missing before what was notified).
        inline: dict[tuple[str, str], list[Message]] = {}
        covered: dict[tuple[str, str], list[tuple[int, int]]] = {}
        traces: dict[tuple[str, str], str] = {}
        need: list[tuple[str, str, int, int]] = []
        for notice in notices:
            key = (notice.merchant_id, notice.client_id)
            covered.setdefault(key, []).append((notice.first, notice.last))
            if notice.traceparent:
                traces.setdefault(key, notice.traceparent)
            if notice.messages is None:
                need.append((notice.merchant_id, notice.client_id, notice.first, notice.last))
            else:
                inline.setdefault(key, []).extend(notice.messages)
        for key, ranges in covered.items():
            need += [(key[0], key[1], first, last) for first, last in gaps(self._routed.get(key), ranges)]
        fetched: dict[tuple[str, str], list[Message]] = {}
        if need:
            try:
                fetched = await self._db.transaction(store.read_ranges, need)
                self.fetched += len(need)
            except Unavailable:
                # The connections notice the gap themselves and catch up (or on resync).
                log.warning("could not read %d realtime ranges; connections will catch up", len(need))
        # In seq order, consecutive messages merged: each connection gets one
        # socket write per routing pass, not one per message.
        now = trio.current_time()
        for key in covered:
            batches = assemble(self._routed.get(key), inline.get(key, []) + fetched.get(key, []))
            if not batches:
                continue
            self._routed[key] = batches[-1].last
            targets = self._by_client.get(key, ())
            # The push joins the trace of (the first of) the transactions that wrote the messages.
            with tracing.span("realtime push", {"paycast.realtime.connections": len(targets),
                                                "paycast.realtime.messages": sum(len(b.messages) for b in batches)},
                              parent=tracing.from_traceparent(traces.get(key))):
                for batch in batches:
                    for conn in targets:
                        try:
                            conn.offer(batch, now)
                        except Exception:  # noqa: BLE001 - one connection's trouble must not stop routing
                            log.exception("offering to realtime connection %s failed", conn.id)
                            conn.catch_up()

    async def _do_resync(self, keys: list[tuple[str, str]], *, immediate: bool) -> bool:
        """Compare the cursors of ``keys``' connections with their latest seq; lagging ones re-read.

        Args:
          immediate: compare with the latest seq now (after a lost listener or
            an overflow). Otherwise (the periodic check) only with the latest
            seq of the previous check: a message committed a moment ago may
            simply be on its way, one committed a whole period ago is lost.

        Returns:
          False if the database could not be read (when ``immediate``, every
          connection was told to catch up instead).
        """
        if not keys:
            return True
        try:
            latest = await self._db.transaction(store.last_seqs, keys)
        except Unavailable:
            if immediate:
                log.warning("realtime resync could not read the database; every connection catches up")
                for conn in list(self.connections.values()):
                    conn.catch_up()
            return False
        previous = self._previous_latest
        for key in keys:
            seq = latest.get(key, 0)
            against = seq if immediate else previous.get(key, 0)
            previous[key] = seq
            for conn in self._by_client.get(key, ()):
                if conn.cursor < against:
                    conn.catch_up()
        return True

    # ------------------------------------------------------------ heartbeat

    async def heartbeat(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            for phase in range(HEARTBEAT_PHASES):
                await trio.sleep(self._tick_s / HEARTBEAT_PHASES)
                now = trio.current_time()
                for i, conn in enumerate(list(self.connections.values())[phase::HEARTBEAT_PHASES]):
                    conn.check(now, self._ping_s, self._idle_s)
                    if i % HEARTBEAT_SLICE == HEARTBEAT_SLICE - 1:
                        # Tens of thousands of visits would hold the loop for tens of
                        # milliseconds: let requests and deliveries in between slices.
                        await trio.lowlevel.checkpoint()
