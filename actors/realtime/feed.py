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

from actors.listening import keep_listening
from actors.realtime.hub import Hub
from storage import realtime as store
from storage.listener import Listener

log = logging.getLogger("paycast.realtime")
# Notifications buffered between the DB thread and trio before an overflow.
MAX_PENDING = 50_000


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
        self._overflows_seen = 0
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

    def _connected(self, connects: int) -> None:
        if connects > 1:
            log.warning("realtime listener reconnected; resyncing connections")
        # Listening now: anything committed before is in the database.
        self._hub.request_resync()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen forever, reconnecting with backoff. Ready after the first attempt."""
        await keep_listening(self.listener, "realtime listener", self._hub.wake, self._connected,
                             check_s=self._check_s, task_status=task_status)
