"""The database handle: an asyncpg pool on the loop thread, and units of work.

A *unit of work* is an ``async def fn(conn, *args)`` written for asyncio; it
runs inside one transaction, in one crossing from trio (DESIGN.md decision 1).
Domain errors raised inside it roll the transaction back and reach the caller
unchanged; connection trouble becomes :class:`domain.errors.Unavailable`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from domain.errors import Unavailable
from storage import after_commit, crashpoints
from storage.loop_thread import LoopThread
from storage.observe import observed

log = logging.getLogger("paycast.storage")
T = TypeVar("T")
UnitOfWork = Callable[..., Awaitable[T]]

# Failures that mean "the database is not reachable right now", as opposed to a
# bug or a constraint violation. asyncpg raises OSError subclasses for refused
# sockets and its own classes for a server going away mid-query.
_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InterfaceError,
    # Raised by the pool's reset of a connection whose server just died
    # mid-operation ("cannot switch to state 15; another operation is in
    # progress"); seen when the postmaster is killed under load.
    asyncpg.exceptions.InternalClientError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Database:
    """An asyncpg pool living on its own uvloop thread.

    Args:
      dsn: any libpq-style URL asyncpg accepts.
      pool_size: most connections held open.
      statement_timeout_ms: server-side limit on every statement.
      connect_timeout_s: limit on opening a connection and on waiting for one.
    """

    def __init__(self, dsn: str, *, pool_size: int = 10, statement_timeout_ms: int = 5000,
                 connect_timeout_s: float = 2.0) -> None:
        self.dsn = dsn
        self._pool_size = pool_size
        self._statement_timeout_ms = statement_timeout_ms
        self._connect_timeout_s = connect_timeout_s
        self._thread = LoopThread()
        self._pool: asyncpg.Pool | None = None
        self._notifier: after_commit.Notifier | None = None
        # A whole unit of work never takes longer than this on the loop side:
        # acquire + a few statements each bounded by statement_timeout.
        self._uow_timeout_s = connect_timeout_s * 2 + statement_timeout_ms / 1000 * 3

    @property
    def loop_thread(self) -> LoopThread:
        """The asyncio loop thread the pool lives on (for dedicated connections, e.g. LISTEN)."""
        return self._thread

    async def open(self) -> None:
        """Start the loop thread and create the (lazy) pool; no connection is made yet."""
        self._thread.start()

        async def create() -> asyncpg.Pool:
            return await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=self._pool_size,
                timeout=self._connect_timeout_s,
                command_timeout=self._statement_timeout_ms / 1000 + 1,
                max_inactive_connection_lifetime=60,
                init=_init_connection,
                server_settings={
                    "application_name": "paycast",
                    "statement_timeout": str(self._statement_timeout_ms),
                    "idle_in_transaction_session_timeout": str(self._statement_timeout_ms * 2),
                },
            )

        self._pool = await self._thread.run(create())
        self._notifier = after_commit.Notifier(self._pool)

    async def close(self) -> None:
        """Close the pool (bounded) and stop the thread."""
        if self._pool is not None:
            pool, notifier = self._pool, self._notifier
            self._pool = self._notifier = None

            async def close_pool() -> None:
                if notifier is not None:
                    await notifier.close()
                try:
                    await asyncio.wait_for(pool.close(), 5)
                except Exception:  # noqa: BLE001 - closing is best effort
                    pool.terminate()

            await self._thread.run(close_pool())
        self._thread.stop()

    async def transaction(self, fn: UnitOfWork[T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(conn, *args, **kwargs)`` in one transaction, in one crossing.

        Returns:
          What ``fn`` returned, after commit.

        Raises:
          Unavailable: the database could not be reached or timed out.
          PaycastError: raised by ``fn`` (the transaction is rolled back).
        """
        with observed(fn):
            return await self._cross(fn, args, kwargs, transactional=True)

    async def run(self, fn: UnitOfWork[T], *args: Any, **kwargs: Any) -> T:
        """Like :meth:`transaction` but without an explicit transaction (reads, DDL, locks)."""
        with observed(fn):
            return await self._cross(fn, args, kwargs, transactional=False)

    async def _cross(self, fn: UnitOfWork[T], args: tuple, kwargs: dict, transactional: bool) -> T:
        pool, notifier = self._pool, self._notifier
        if pool is None:
            raise Unavailable("The database is not open.")

        async def unit() -> T:
            async with pool.acquire(timeout=self._connect_timeout_s) as conn:
                if not transactional:
                    return await fn(conn, *args, **kwargs)
                # Notifications queued by the unit go out after commit, batched (storage.after_commit).
                with after_commit.collecting() as queued:
                    async with conn.transaction():
                        result = await fn(conn, *args, **kwargs)
                        written = await crashpoints.before_commit(conn)  # test-only hook, a no-op unless armed
                crashpoints.after_commit(written)
                if queued and notifier is not None:
                    notifier.add(queued)
                return result

        try:
            return await self._thread.run(asyncio.wait_for(unit(), self._uow_timeout_s))
        except _UNAVAILABLE as exc:
            log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
            raise Unavailable("The database is unavailable; retry shortly.") from exc
