"""Keep the embedded PostgreSQL of a running server alive.

If the postmaster dies under a server (killed, crashed), requests get 503
``unavailable`` from the database layer while this task starts it again;
PostgreSQL's crash recovery replays the WAL, so every acknowledged (committed,
``fsync``-ed) write is still there. Pool connections to the dead server are
dropped by asyncpg and re-opened on the next use.
"""

from __future__ import annotations

import logging

import trio

from pg.cluster import EmbeddedPostgres, EmbeddedPostgresError

log = logging.getLogger("paycast.storage")

#: How often the postmaster is looked at (reads postmaster.pid and /proc).
CHECK_INTERVAL_S = 0.5
#: Longest wait between two failed restart attempts.
MAX_BACKOFF_S = 10.0


async def supervise(pg: EmbeddedPostgres, *, interval_s: float = CHECK_INTERVAL_S) -> None:
    """Run for ever: restart the embedded PostgreSQL whenever it is found dead.

    Args:
      pg: the handle the server started (and holds a lease on).
      interval_s: seconds between two checks.
    """
    backoff = interval_s
    while True:
        await trio.sleep(backoff)
        if await trio.to_thread.run_sync(pg.is_running):
            backoff = interval_s
            continue
        log.warning("embedded PostgreSQL on %s is not running; restarting it", pg.pgdata)
        try:
            # Not cancellable on purpose: pg.start holds the data dir's lock
            # and is bounded by its own timeouts.
            await trio.to_thread.run_sync(pg.start)
        except EmbeddedPostgresError as exc:
            backoff = min(MAX_BACKOFF_S, max(interval_s, backoff * 2))
            log.error("restarting the embedded PostgreSQL failed (next try in %.1fs): %s", backoff, exc)
        else:
            log.warning("embedded PostgreSQL restarted")
            backoff = interval_s
