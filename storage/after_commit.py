"""NOTIFY after commit, batched, off the transaction that caused it.

PostgreSQL serialises the commits of every transaction that ran ``NOTIFY`` on
one database-wide lock, held from just before commit until the commit record
is flushed. So a unit of work that notifies inside its own transaction makes
every such transaction in the database wait for the others' fsyncs — which is
what a realtime notification for every event of a customer's payment did.

Instead a unit of work *queues* its notifications (:func:`notify`); the
database handle collects them per transaction (:func:`collecting`) and, after
commit only, gives them to a :class:`Notifier` that sends everything queued by
all committed transactions since its last send in **one** statement, in a
transaction of its own with ``synchronous_commit = off`` (a notification is a
wake-up, not data: nothing is lost if it is). While one send is in flight the
next ones accumulate, so under load it is one notifying transaction per burst.

Receivers never rely on a notification arriving: everything it announces was
committed first, a receiver that sees a gap reads it from the database, and
the realtime hub also re-checks its clients periodically, which covers a
notification lost to a crash between commit and send.

Called outside :func:`collecting` (a caller managing its own transaction),
:func:`notify` falls back to ``pg_notify`` inside that transaction: correct,
but that commit then waits on the database-wide lock described above.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

log = logging.getLogger("paycast.storage")

_queued: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar("after_commit", default=None)


async def notify(conn: asyncpg.Connection, channel: str, payload: str) -> None:
    """Send ``payload`` on ``channel`` once the current transaction commits."""
    queued = _queued.get()
    if queued is None:
        await conn.execute("SELECT pg_notify($1, $2)", channel, payload)
    else:
        queued.append((channel, payload))


@contextmanager
def collecting() -> Iterator[list[tuple[str, str]]]:
    """Collect what :func:`notify` queues in this context (one unit of work)."""
    queued: list[tuple[str, str]] = []
    token = _queued.set(queued)
    try:
        yield queued
    finally:
        _queued.reset(token)


# One round trip, its own (implicit) transaction; committed without waiting for
# the WAL flush, so the database-wide notify lock is held as briefly as possible.
_SEND_SQL = """
WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true))
SELECT pg_notify(n.c, n.p) FROM async_commit, unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(c, p, i)
ORDER BY n.i
"""


class Notifier:
    """Sends queued notifications in batches on the pool's loop (asyncio side).

    Args:
      pool: where to take a connection for each send.
      max_pending: notifications kept while a send is failing; beyond that the
        oldest are dropped (receivers catch up from the database).
    """

    def __init__(self, pool: asyncpg.Pool, max_pending: int = 100_000) -> None:
        self._pool = pool
        self._max_pending = max_pending
        self._pending: list[tuple[str, str]] = []
        self._task: asyncio.Task | None = None
        self.sends = 0
        self.sent = 0
        self.dropped = 0

    def add(self, items: list[tuple[str, str]]) -> None:
        """Queue notifications of a committed transaction (call on the loop thread)."""
        self._pending += items
        if len(self._pending) > self._max_pending:
            excess = len(self._pending) - self._max_pending
            del self._pending[:excess]
            self.dropped += excess
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._send_all())

    async def _send_all(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                async with self._pool.acquire() as conn:
                    await conn.execute(_SEND_SQL, [c for c, _ in batch], [p for _, p in batch])
            except Exception as exc:  # noqa: BLE001 - receivers catch up from the database
                self.dropped += len(batch)
                log.warning("could not send %d notifications (receivers will catch up): %s: %s",
                            len(batch), type(exc).__name__, exc)
                return
            self.sends += 1
            self.sent += len(batch)

    async def close(self) -> None:
        """Let a send in flight finish (bounded by the caller)."""
        if self._task is not None and not self._task.done():
            await asyncio.wait([self._task], timeout=2)
