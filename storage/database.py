"""The database handle: an asyncpg pool on the loop thread, and units of work.

A *unit of work* is an ``async def fn(conn, *args)`` written for asyncio; it
runs inside one transaction, in one crossing from trio (docs/architecture.md decision 1).
Domain errors raised inside it roll the transaction back and reach the caller
unchanged; connection trouble becomes :class:`domain.errors.Unavailable`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import orjson

from domain.errors import PaycastError, Unavailable
from storage import after_commit, crashpoints
from storage.loop_thread import LoopThread
from storage.observe import observed
from telemetry import metrics, tracing

if TYPE_CHECKING:
    from storage.events import Projection
    from storage.payments import Follower

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


def _dumps(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")


@dataclasses.dataclass(frozen=True)
class Commits:
    """What commits with a change besides the change itself, in the order it runs.

    The running system gives its own to the database once
    (:meth:`Database.register_commits`, components/__init__.py); storage alone
    has none. A unit of work finds it on its connection (:func:`commits_of`).

    Attributes:
      followers: what follows a payment's status in the same transaction
        (its order, the wallet deposit it funds): :class:`storage.payments.Follower`.
      projections: what the statement appending events also writes from them
        (the customers' realtime log): :class:`storage.events.Projection`.
    """

    followers: tuple[Follower, ...] = ()
    projections: tuple[Projection, ...] = ()


NO_COMMITS = Commits()


def commits_of(conn: asyncpg.Connection) -> Commits:
    """What commits with a change made on ``conn``: its database's :class:`Commits`
    (none on a connection no :class:`Database` handed out)."""
    return getattr(conn, "commits", NO_COMMITS)


class CountingConnection(asyncpg.Connection):
    """An asyncpg connection that counts the statements it sends (one round trip each).

    asyncpg sends ``BEGIN``/``COMMIT`` through :meth:`execute` too, so a unit
    of work's count includes its transaction control. A statement's first use
    on a connection also costs a Parse round trip; the statement cache makes
    that a one-off per connection, so it is not counted.
    """

    round_trips = 0
    # Set by the Database on every checkout (commits_of).
    commits: Commits = NO_COMMITS

    async def execute(self, *args, **kwargs):
        self.round_trips += 1
        return await super().execute(*args, **kwargs)

    async def executemany(self, *args, **kwargs):
        self.round_trips += 1
        return await super().executemany(*args, **kwargs)

    async def fetch(self, *args, **kwargs):
        self.round_trips += 1
        return await super().fetch(*args, **kwargs)

    async def fetchrow(self, *args, **kwargs):
        self.round_trips += 1
        return await super().fetchrow(*args, **kwargs)

    async def fetchval(self, *args, **kwargs):
        self.round_trips += 1
        return await super().fetchval(*args, **kwargs)

    def get_reset_query(self) -> str:
        """No reset statement when a connection goes back to the pool.

        Units of work leave no session state behind (no LISTEN, SET or
        advisory lock outlives the unit that took it; migrations unlock in a
        ``finally``), and asyncpg still rolls back any open transaction. The
        default reset would cost a round trip per checkout.
        """
        return ""


@dataclasses.dataclass
class UnitStats:
    """What one named unit of work cost so far in this process."""

    units: int = 0
    round_trips: int = 0
    seconds: float = 0.0
    max_round_trips: int = 0


def single_unit(fn: UnitOfWork[T]) -> UnitOfWork[T]:
    """Mark a unit of work that is atomic by itself: :meth:`Database.transaction`
    runs it without ``BEGIN``/``COMMIT`` (two round trips saved).

    For units that are one statement, reads, or guarded statements whose
    guards make them safe apart, and that open their own transaction when
    (and only when) they need several statements to commit together.
    """
    fn.single_unit = True  # type: ignore[attr-defined]
    return fn


def unit_name(fn: Callable) -> str:
    """``payments.create`` for :func:`storage.payments.create`: the name metrics use."""
    fn = getattr(fn, "func", fn)  # a functools.partial names its function
    return f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}"


class Database:
    """An asyncpg pool living on its own uvloop thread.

    Args:
      dsn: any libpq-style URL asyncpg accepts.
      pool_size: most connections held open.
      statement_timeout_ms: server-side limit on every statement.
      connect_timeout_s: limit on opening a connection and on waiting for one.
      session_settings: settings every session starts with (custom ``paycast.*``
        ones carry configuration to SQL, e.g. the webhook retry schedule).
    """

    def __init__(self, dsn: str, *, pool_size: int = 10, statement_timeout_ms: int = 5000,
                 connect_timeout_s: float = 2.0, session_settings: dict[str, str] | None = None) -> None:
        self.dsn = dsn
        self._session_settings = dict(session_settings or {})
        self._pool_size = pool_size
        self._statement_timeout_ms = statement_timeout_ms
        self._connect_timeout_s = connect_timeout_s
        self._thread = LoopThread()
        self._pool: asyncpg.Pool | None = None
        self._notifier: after_commit.Notifier | None = None
        # A whole unit of work never takes longer than this on the loop side:
        # acquire + a few statements each bounded by statement_timeout.
        self._uow_timeout_s = connect_timeout_s * 2 + statement_timeout_ms / 1000 * 3
        # Per unit-of-work name; written on the loop thread only, read by /metrics.
        self.stats: dict[str, UnitStats] = {}
        self.commits = NO_COMMITS

    def register_commits(self, commits: Commits) -> None:
        """What commits with every change made through this database from now on
        (the component factory's registration step; see :class:`Commits`)."""
        self.commits = commits

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
                connection_class=CountingConnection,
                server_settings={
                    "application_name": "paycast",
                    "statement_timeout": str(self._statement_timeout_ms),
                    "idle_in_transaction_session_timeout": str(self._statement_timeout_ms * 2),
                    **self._session_settings,
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

        ``BEGIN`` and ``COMMIT`` are two round trips of their own: a unit of
        work that is one statement should use :meth:`run` instead (a single
        statement is atomic by itself).

        Returns:
          What ``fn`` returned, after commit.

        Raises:
          Unavailable: the database could not be reached or timed out.
          PaycastError: raised by ``fn`` (the transaction is rolled back).
        """
        with observed(fn):
            return await self._cross(fn, args, kwargs, transactional=True)

    async def run(self, fn: UnitOfWork[T], *args: Any, **kwargs: Any) -> T:
        """Like :meth:`transaction` but without an explicit transaction.

        For units of work that are one statement (atomic on their own), reads,
        DDL, locks, and units that open their own transaction only when they
        need more than one statement.
        """
        with observed(fn):
            return await self._cross(fn, args, kwargs, transactional=False)

    async def _cross(self, fn: UnitOfWork[T], args: tuple, kwargs: dict, transactional: bool) -> T:
        pool, notifier = self._pool, self._notifier
        if pool is None:
            raise Unavailable("The database is not open.")

        async def unit() -> T:
            async with asyncio.timeout(self._uow_timeout_s), pool.acquire(timeout=self._connect_timeout_s) as conn:
                raw = getattr(conn, "_con", conn)  # the pool hands out a proxy
                raw.commits = self.commits
                before, started = raw.round_trips, time.perf_counter()
                try:
                    # A unit atomic by itself needs no BEGIN/COMMIT; with a test
                    # crash point armed it runs in a transaction anyway, so the
                    # point can fire between its statements and the commit.
                    single = getattr(getattr(fn, "func", fn), "single_unit", False) and not crashpoints.armed()
                    written = None
                    # Notifications queued by the unit go out after commit, batched (storage.after_commit).
                    with after_commit.collecting() as queued:
                        if not transactional or single:
                            result = await fn(conn, *args, **kwargs)
                        else:
                            async with conn.transaction():
                                result = await fn(conn, *args, **kwargs)
                                written = await crashpoints.before_commit(conn)  # test-only, no-op unless armed
                    crashpoints.after_commit(written)
                    if queued and notifier is not None:
                        notifier.add(queued)
                    return result
                finally:
                    self._record(unit_name(fn), raw.round_trips - before, time.perf_counter() - started)

        try:
            return await self._thread.run(unit())
        except _UNAVAILABLE as exc:
            log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
            raise Unavailable("The database is unavailable; retry shortly.") from exc

    async def batch(self, calls: list[tuple[UnitOfWork, tuple]], *,
                    contexts: list[tracing.Context] | None = None) -> list[object]:
        """Run several units of work in one transaction and one crossing (group commit).

        Args:
          contexts: per call, the trace context it runs in (its request's), so
            the events it writes join that trace.

        Each call's domain error (:class:`PaycastError`) is its own answer and
        leaves the others alone. Any other error (a database error, or a bug
        in one unit) aborts the transaction: it is rolled back and every call
        is run again in its own unit, so one bad item fails alone, never its
        batch-mates. Nobody's result is returned before the commit that holds it.

        Returns:
          Per call, what it returned or the exception it raised.

        Raises:
          Unavailable: the database could not be reached (for the whole batch).
        """
        if len(calls) == 1:  # idle: a batch of one is the unit alone (no BEGIN/COMMIT of its own)
            fn, args = calls[0]
            try:
                return [await self.transaction(fn, *args)]
            except Unavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - the unit's own error is its answer
                return [exc]
        with observed(self.batch):
            return await self._batch(calls, contexts or [None] * len(calls))

    async def _batch(self, calls: list[tuple[UnitOfWork, tuple]], contexts: list) -> list[object]:
        pool, notifier = self._pool, self._notifier
        if pool is None:
            raise Unavailable("The database is not open.")

        async def run_batch() -> list[object] | None:
            async with asyncio.timeout(self._uow_timeout_s * 2), pool.acquire(timeout=self._connect_timeout_s) as conn:
                raw = getattr(conn, "_con", conn)
                raw.commits = self.commits
                results: list[object] = []
                before, item_trips, batch_started = raw.round_trips, 0, time.perf_counter()
                try:
                    with after_commit.collecting() as queued:
                        async with conn.transaction():
                            for (fn, args), context in zip(calls, contexts):
                                started, trips = time.perf_counter(), raw.round_trips
                                try:
                                    with tracing.attached(context):
                                        results.append(await fn(conn, *args))
                                except PaycastError as exc:
                                    results.append(exc)
                                item_trips += raw.round_trips - trips
                                self._record(unit_name(fn), raw.round_trips - trips, time.perf_counter() - started)
                            written = await crashpoints.before_commit(conn)  # test-only hook, a no-op unless armed
                    crashpoints.after_commit(written)
                    if queued and notifier is not None:
                        notifier.add(queued)  # the batch's notifications, after its commit
                except _UNAVAILABLE:
                    raise
                except Exception as exc:  # noqa: BLE001 - a database error, or a unit's bug: not its batch-mates'
                    log.warning("batch of %d units failed (%s: %s); running them one by one",
                                len(calls), type(exc).__name__, exc)
                    return None
                finally:
                    # The batch's own cost: BEGIN and COMMIT (or ROLLBACK), shared by its calls.
                    self._record("database.batch", raw.round_trips - before - item_trips,
                                 time.perf_counter() - batch_started)
                return results

        try:
            results = await self._thread.run(run_batch())
        except _UNAVAILABLE as exc:
            log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
            raise Unavailable("The database is unavailable; retry shortly.") from exc
        if results is not None:
            return results
        metrics.discard_pending()  # the rolled-back batch's transitions: the units report again below
        alone: list[object] = []
        for fn, args in calls:
            try:
                alone.append(await self.transaction(fn, *args))
            except Exception as exc:  # noqa: BLE001 - each call's own error is its answer
                alone.append(exc)
        return alone

    def _record(self, name: str, round_trips: int, seconds: float) -> None:
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = UnitStats()
        stats.units += 1
        stats.round_trips += round_trips
        stats.seconds += seconds
        stats.max_round_trips = max(stats.max_round_trips, round_trips)
