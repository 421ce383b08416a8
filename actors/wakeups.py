"""Wake background actors promptly, in this process or in another one.

``actor:wake-sender`` (in processes that store work for actors they do not
run) coalesces wake-ups and sends them as ``NOTIFY`` after the work's
commit (:mod:`storage.wakeups`); at most one notifying statement is in flight,
so a burst costs one round trip. ``actor:wake-listener`` (in processes that
run those actors) keeps a ``LISTEN`` connection and wakes the local actor
named by each notification; after every (re)connect it wakes all of them,
since notifications sent while nobody listened are lost. The actors poll as
well, so wake-ups only make them prompt, never correct.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping

import trio

from actors.listening import keep_listening
from domain.errors import Unavailable
from storage import wakeups as store
from storage.listener import Listener

MAX_PENDING = 1024
CHECK_S = 5.0


class Topic(enum.StrEnum):
    INBOX = "inbox"              # gateway webhooks stored: the inbox processor
    DELIVERIES = "deliveries"    # outgoing deliveries due now: the webhook dispatcher


class Wakeups:
    """Where wake-ups go.

    Args:
      db: the open database (its loop thread and DSN are reused for LISTEN).
      local: the wake function of each topic whose actor runs in this process;
        other topics are sent to the other processes.
      timeout_s: connect and probe limit of the LISTEN connection.
    """

    def __init__(self, db, local: Mapping[Topic, Callable[[], None]], *, timeout_s: float) -> None:
        self._db = db
        self._local = dict(local)
        self._timeout_s = timeout_s
        self._pending: set[Topic] = set()
        self._ready = trio.Event()
        self.sent = 0
        self.received = 0

    @property
    def sends(self) -> bool:
        """Whether some topic is woken in other processes (the sender must run)."""
        return len(self._local) < len(Topic)

    @property
    def listens(self) -> bool:
        """Whether some topic's actor runs here (the listener must run)."""
        return bool(self._local)

    def wake(self, topic: Topic) -> None:
        """Wake ``topic``'s actor: here at once, elsewhere by the next notification."""
        local = self._local.get(topic)
        if local is not None:
            local()
            return
        self._pending.add(topic)
        self._ready.set()

    async def run_sender(self) -> None:
        """Send pending wake-ups, one statement at a time, coalescing what arrives meanwhile."""
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            topics, self._pending = sorted(self._pending), set()
            try:
                await self._db.run(store.notify, topics)
                self.sent += len(topics)
            except Unavailable:
                pass  # the workers' poll finds the work

    async def run_listener(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        """Listen for wake-ups forever, reconnecting with backoff. Ready after the first attempt."""
        listener = Listener(self._db.loop_thread, self._db.dsn, store.CHANNEL, max_pending=MAX_PENDING,
                            timeout_s=self._timeout_s)

        def on_wake() -> None:
            for payload in listener.take():
                self.received += 1
                local = self._local.get(payload)  # type: ignore[call-overload]
                if local is not None:
                    local()

        def on_connected(_connects: int) -> None:
            for local in self._local.values():  # whatever was announced while nobody listened
                local()

        await keep_listening(listener, "wake-up listener", on_wake, on_connected, check_s=CHECK_S,
                             task_status=task_status)
