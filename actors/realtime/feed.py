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
from typing import Protocol

import trio

from actors.listening import keep_listening
from storage import realtime as store
from storage.listener import Listener

log = logging.getLogger("paycast.realtime")
# Notifications buffered between the DB thread and trio before an overflow.
MAX_PENDING = 50_000


class Listening(Protocol):
    """What the feed tells the hub (:class:`actors.realtime.hub.Hub`)."""

    def wake(self) -> None:
        """Notifications are waiting: take them (:meth:`Feed.take`)."""

    def request_resync(self) -> None:
        """Notifications may have been missed: every connection re-reads from the database."""


class Feed:
    """The LISTEN side of the realtime gateway; the hub takes its notifications
    (it is the hub's ``feed``, :class:`actors.realtime.hub.Notifications`).

    Args:
      db: the open database (its loop thread and DSN are reused).
      check_s: how often the LISTEN connection is probed.
      timeout_s: connect and probe limit.
    """

    def __init__(self, db, *, check_s: float, timeout_s: float) -> None:
        self.listener = Listener(db.loop_thread, db.dsn, store.CHANNEL, max_pending=MAX_PENDING, timeout_s=timeout_s)
        self._check_s = check_s
        self._overflows_seen = 0

    def take(self) -> list[str]:
        """Waiting payloads for the hub."""
        return self.listener.take()

    def missed(self) -> bool:
        """Whether the notification buffer overflowed since the last call (then every connection re-reads)."""
        overflows = self.listener.overflows
        if overflows == self._overflows_seen:
            return False
        self._overflows_seen = overflows
        log.warning("realtime notification buffer overflowed; connections re-read from the database")
        return True

    async def run(self, hub: Listening, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen forever for ``hub``, reconnecting with backoff. Ready after the first attempt."""
        def connected(connects: int) -> None:
            if connects > 1:
                log.warning("realtime listener reconnected; resyncing connections")
            # Listening now: anything committed before is in the database.
            hub.request_resync()

        await keep_listening(self.listener, "realtime listener", hub.wake, connected,
                             check_s=self._check_s, task_status=task_status)
