"""``actor:realtime-listener``: keeps one LISTEN connection alive and feeds the hub.

A lost LISTEN connection is noticed at once when PostgreSQL closes it (the
termination callback) and otherwise by a periodic round trip. Each time the
feed (re)connects it asks the hub to resync: every local connection whose
cursor is behind its client's latest seq re-reads from the database, which
covers whatever was committed while nobody was listening. The same happens
when the notification buffer overflowed.
"""

from __future__ import annotations

import logging

import trio

from actors.realtime.hub import Hub
from storage import realtime as store
from storage.listener import Listener

log = logging.getLogger("paycast.realtime")
# Notifications buffered between the DB thread and trio before an overflow.
MAX_PENDING = 50_000
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0


class Feed:
    """The LISTEN side of the realtime gateway.

    Args:
      db: the open database (its loop thread and DSN are reused).
      hub: where notifications go.
      check_s: how often the LISTEN connection is probed.
      timeout_s: connect and probe limit.
    """

    def __init__(self, db, hub: Hub, *, check_s: float, timeout_s: float) -> None:
        self.listener = Listener(db.loop_thread, db.dsn, store.CHANNEL, max_pending=MAX_PENDING, timeout_s=timeout_s)
        self._hub = hub
        self._check_s = check_s
        self._lost = trio.Event()
        self._overflows_seen = 0
        self.connects = 0
        self.backend_pid: int | None = None
        hub.take = self.take

    def take(self) -> list[str]:
        """Waiting payloads for the hub; an overflow since last time asks for a resync."""
        payloads = self.listener.take()
        overflows = self.listener.overflows
        if overflows != self._overflows_seen:
            self._overflows_seen = overflows
            log.warning("realtime notification buffer overflowed; connections re-read from the database")
            self._hub.request_resync()
        return payloads

    def _on_lost(self) -> None:
        self._lost.set()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen forever, reconnecting with backoff. Ready after the first attempt."""
        backoff = FIRST_BACKOFF_S
        ready = False
        try:
            while True:
                self._lost = trio.Event()
                try:
                    self.backend_pid = await self.listener.connect(self._hub.wake, self._on_lost)
                except Exception as exc:  # noqa: BLE001 - the database may be down: retry
                    log.warning("realtime listener cannot connect: %s: %s", type(exc).__name__, exc)
                    if not ready:
                        ready = True
                        task_status.started()
                    await trio.sleep(backoff)
                    backoff = min(MAX_BACKOFF_S, backoff * 2)
                    continue
                self.connects += 1
                backoff = FIRST_BACKOFF_S
                if self.connects > 1:
                    log.warning("realtime listener reconnected; resyncing connections")
                # Listening now: anything committed before is in the database.
                self._hub.request_resync()
                if not ready:
                    ready = True
                    task_status.started()
                await self._watch()
                await self.listener.close()
        finally:
            with trio.CancelScope(shield=True):
                await self.listener.close()

    async def _watch(self) -> None:
        """Return when the LISTEN connection is lost."""
        while True:
            with trio.move_on_after(self._check_s):
                await self._lost.wait()
                log.warning("realtime listener connection terminated")
                return
            if not await self.listener.check():
                return
