"""An asyncio (uvloop) event loop on its own thread, called from trio.

Why not trio-asyncio (docs/architecture.md decision 1): asyncpg through it ran
several times slower than on a plain uvloop thread that trio hands coroutines
to and that wakes trio back through its token (bench/RESULTS.md "Measurements
cited by the code"). Each crossing should carry one whole unit of work.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import trio

try:  # uvloop is a dependency, but the bridge works without it (e.g. on Windows).
    import uvloop

    _new_loop = uvloop.new_event_loop
except ImportError:  # pragma: no cover
    _new_loop = asyncio.new_event_loop

T = TypeVar("T")


class LoopThread:
    """Owns one asyncio loop running forever on a daemon thread."""

    def __init__(self, name: str = "paycast-db") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

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

        The wait is shielded: once a unit of work has crossed over it runs to its
        end (commit or rollback), so a trio cancellation never leaves a
        transaction half applied without us knowing its outcome. Callers bound
        the coroutine itself (statement and acquire timeouts).

        The coroutine runs in a copy of the caller's context: its context
        variables (the current trace span, the log correlation ids) reach it.
        ``call_soon_threadsafe`` copies the *calling* thread's context into the
        handle, and the task created inside that callback copies it again
        (asyncio and uvloop alike). tests/e2e/test_tracing.py relies on it:
        units of work nest under the caller's span.

        A crossing is one ``call_soon_threadsafe`` there and one
        ``run_sync_soon`` back, and nothing else: no ``concurrent.futures``
        future: its condition variable and the callbacks chaining it to the
        task would cost more CPU than the crossing itself (bench/RESULTS.md
        "Measurements cited by the code").

        Returns:
          The coroutine's result.

        Raises:
          Whatever the coroutine raised.
        """
        assert self._loop is not None, "LoopThread not started"
        loop, token = self._loop, trio.lowlevel.current_trio_token()
        done = trio.Event()
        finished: list[asyncio.Task[T]] = []

        def wake(task: asyncio.Task[T]) -> None:
            finished.append(task)
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:  # trio already gone; nobody waits
                pass

        def start() -> None:
            loop.create_task(coro).add_done_callback(wake)

        loop.call_soon_threadsafe(start)
        with trio.CancelScope(shield=True):
            await done.wait()
        return finished[0].result()

    def stop(self) -> None:
        """Stop the loop and join the thread (idempotent)."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
