"""An asyncio (uvloop) event loop on its own thread, called from trio.

Why not trio-asyncio (docs/architecture.md decision 1): asyncpg through it ran
several times slower than on a plain uvloop thread that trio hands coroutines
to and that wakes trio back through its token (bench/RESULTS.md "Measurements
cited by the code"). Each crossing should carry one whole unit of work.

Crossings coalesce both ways: those made while the loop has not yet picked up
earlier ones ride on one ``call_soon_threadsafe``, and units finishing while
trio has not yet taken earlier results ride on one ``TrioToken.run_sync_soon``
(bench/RESULTS.md "Follow-up: a coalescing loop thread").
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Coroutine
from typing import Any, NamedTuple, TypeVar

import outcome
import trio

try:  # uvloop is a dependency, but the bridge works without it (e.g. on Windows).
    import uvloop

    _new_loop = uvloop.new_event_loop
except ImportError:  # pragma: no cover
    _new_loop = asyncio.new_event_loop

T = TypeVar("T")


class _Crossing(NamedTuple):
    """One coroutine handed to the loop, and who waits for it."""

    coro: Coroutine[Any, Any, Any]
    context: contextvars.Context  # a copy of the caller's
    token: trio.lowlevel.TrioToken  # the caller's trio run
    task: trio.lowlevel.Task  # the caller


def _uncancellable(_raise_cancel: Any) -> trio.lowlevel.Abort:
    # Trio keeps the cancellation pending and delivers it at the task's next checkpoint.
    return trio.lowlevel.Abort.FAILED


class LoopThread:
    """Owns one asyncio loop running forever on a daemon thread."""

    def __init__(self, name: str = "paycast-db") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Crossings the loop has not picked up yet; not empty = a pick-up is scheduled.
        self._outbox: list[_Crossing] = []
        # Per trio run, results trio has not taken yet; a key = a wake-up is scheduled.
        self._inbox: dict[trio.lowlevel.TrioToken, list[tuple[trio.lowlevel.Task, outcome.Outcome]]] = {}

    def start(self) -> None:
        """Start the thread and return once its loop runs."""
        ready = threading.Event()

        def main() -> None:
            loop = _new_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=self._name, daemon=True)
        self._thread.start()
        ready.wait()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for it from trio.

        The wait cannot be cancelled: once a unit of work has crossed over it
        runs to its end (commit or rollback), so a trio cancellation never
        leaves a transaction half applied without us knowing its outcome. A
        cancelled caller gets the result, then ``Cancelled`` at its next
        checkpoint (as ``trio.to_thread.run_sync`` without
        ``abandon_on_cancel``); a ``KeyboardInterrupt`` waits for the result
        too. Callers bound the coroutine itself (statement and acquire
        timeouts).

        The coroutine runs in a copy of the caller's context: its context
        variables (the current trace span, the log correlation ids) reach it.
        tests/e2e/test_tracing.py relies on it: units of work nest under the
        caller's span.

        Crossings coalesce: the loop picks up every crossing made since it last
        did in one ``call_soon_threadsafe``, and trio takes every result
        finished since it last did in one ``run_sync_soon``, which reschedules
        each waiting task directly (no ``trio.Event``, no cancel scope, no
        ``concurrent.futures`` future). CPU per crossing, busy machine: 85 →
        54 µs alone, 23 → 8 µs with 32 tasks crossing; ``SELECT 1`` 103 → 87 µs,
        a unit of work without fsync 237 → 197 µs (bench/RESULTS.md "Follow-up:
        a coalescing loop thread").

        Returns:
          The coroutine's result.

        Raises:
          RuntimeError: not called from trio, or the loop is closed (stopped).
          Whatever the coroutine raised.
        """
        assert self._loop is not None, "LoopThread not started"
        crossing = _Crossing(coro, contextvars.copy_context(), trio.lowlevel.current_trio_token(),
                             trio.lowlevel.current_task())
        with self._lock:
            self._outbox.append(crossing)
            schedule = len(self._outbox) == 1
        if schedule:
            try:
                self._loop.call_soon_threadsafe(self._start_all)
            except RuntimeError:  # the loop is closed: nothing will pick these up
                with self._lock:
                    self._outbox.clear()
                raise
        return await trio.lowlevel.wait_task_rescheduled(_uncancellable)

    def _start_all(self) -> None:
        """Start every crossing waiting in the outbox (on the loop thread)."""
        with self._lock:
            crossings, self._outbox = self._outbox, []
        for crossing in crossings:
            task = self._loop.create_task(crossing.coro, context=crossing.context)
            task.add_done_callback(functools.partial(self._finished, crossing.token, crossing.task))

    def _finished(self, token: trio.lowlevel.TrioToken, waiter: trio.lowlevel.Task, task: asyncio.Task) -> None:
        """Hand one finished unit's outcome to its trio run (on the loop thread)."""
        result = outcome.capture(task.result)
        with self._lock:
            batch = self._inbox.setdefault(token, [])
            batch.append((waiter, result))
            schedule = len(batch) == 1
        if schedule:
            try:
                token.run_sync_soon(self._wake_all, token)
            except trio.RunFinishedError:  # trio already gone; nobody waits
                with self._lock:
                    del self._inbox[token]

    def _wake_all(self, token: trio.lowlevel.TrioToken) -> None:
        """Reschedule every task whose unit finished (in trio)."""
        with self._lock:
            batch = self._inbox.pop(token)
        for waiter, result in batch:
            trio.lowlevel.reschedule(waiter, result)

    def stop(self) -> None:
        """Stop the loop and join the thread (idempotent)."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
