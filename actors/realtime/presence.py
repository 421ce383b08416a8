"""``actor:realtime-presence``: writes this process's connections to the
database in batches, so presence and publish counts work across processes.

Joins and leaves are coalesced (a connection that comes and goes between two
flushes is never written) and flushed in one transaction; every third of the
presence TTL the process refreshes its rows and drops rows of processes that
stopped refreshing (they died). Local answers never wait for this: the hub
knows its own connections exactly; the table is for the other processes.
"""

from __future__ import annotations

import logging

import trio

from domain.errors import Unavailable
from storage import realtime as store

log = logging.getLogger("paycast.realtime")
# Joins arriving close together go out in one transaction.
COALESCE_S = 0.05
RETRY_S = 1.0


class PresenceWriter:
    """Batches presence rows for one process (``node_id``)."""

    def __init__(self, db, node_id: str, ttl_s: float) -> None:
        self._db = db
        self.node_id = node_id
        self.ttl_s = ttl_s
        self._joined: dict[str, tuple[str, str, str, str | None]] = {}
        self._left: set[str] = set()
        self._wake = trio.Event()

    def joined(self, connection_id: str, merchant_id: str, client_id: str, device_id: str | None) -> None:
        self._joined[connection_id] = (connection_id, merchant_id, client_id, device_id)
        self._wake.set()

    def left(self, connection_id: str) -> None:
        if self._joined.pop(connection_id, None) is None:
            self._left.add(connection_id)
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        refresh_every = self.ttl_s / 3
        next_refresh = trio.current_time()
        try:
            while True:
                with trio.move_on_at(next_refresh):
                    await self._wake.wait()
                    await trio.sleep(COALESCE_S)
                self._wake = trio.Event()
                joined, self._joined = list(self._joined.values()), {}
                left, self._left = list(self._left), set()
                refresh = trio.current_time() >= next_refresh
                try:
                    await self._db.transaction(store.sync_presence, self.node_id, joined, left, refresh, self.ttl_s)
                except Unavailable:
                    for row in joined:  # try again later, unless it left meanwhile
                        if row[0] in self._left:
                            self._left.discard(row[0])
                        else:
                            self._joined.setdefault(row[0], row)
                    self._left.update(left)
                    await trio.sleep(RETRY_S)
                    self._wake.set()
                    continue
                if refresh:
                    next_refresh = trio.current_time() + refresh_every
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                try:
                    await self._db.transaction(store.clear_presence, self.node_id)
                except Exception:  # noqa: BLE001 - rows age out anyway
                    pass
