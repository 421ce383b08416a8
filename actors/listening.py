"""Keep a LISTEN connection alive for ever: the loop both listeners run.

``actor:wake-listener`` (:mod:`actors.wakeups`) and ``actor:realtime-listener``
(:mod:`actors.realtime.feed`) differ in what a notification does and what they
re-read after a (re)connect; connecting with backoff while the database is
down, noticing a lost connection and reconnecting are this one loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from storage.listener import Listener

log = logging.getLogger("paycast.listener")
# Reconnect backoff: quick after a blip, at most one attempt every 5 s during an outage.
FIRST_BACKOFF_S = 0.2
MAX_BACKOFF_S = 5.0


async def keep_listening(listener: Listener, name: str, on_wake: Callable[[], None],
                         on_connected: Callable[[int], None], *, check_s: float,
                         task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
    """Connect ``listener``, watch it and reconnect when it is lost, until cancelled.

    Args:
      name: what the logs call it (``"realtime listener"``).
      on_wake: called on the trio thread when notifications are waiting.
      on_connected: called after every successful connect with the number of
        connects so far (1 the first time). Notifications sent while nobody
        listened are lost: this is where the owner catches up.
      check_s: how often a connection that PostgreSQL has not reported closed
        is probed with a round trip.

    Ready (``task_status.started()``) after the first attempt, connected or not:
    a process starts while its database is down, and catches up once it is back.
    """
    backoff, connects, ready = FIRST_BACKOFF_S, 0, False
    try:
        while True:
            lost = trio.Event()
            try:
                await listener.connect(on_wake, lost.set)
            except Exception as exc:  # noqa: BLE001 - the database may be down: retry
                log.warning("%s cannot connect: %s: %s", name, type(exc).__name__, exc)
                if not ready:
                    ready = True
                    task_status.started()
                await trio.sleep(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
                continue
            connects += 1
            backoff = FIRST_BACKOFF_S
            on_connected(connects)
            if not ready:
                ready = True
                task_status.started()
            await _watch(listener, lost, check_s)
            log.warning("%s connection lost; reconnecting", name)
            await listener.close()
    finally:
        with trio.CancelScope(shield=True):
            await listener.close()


async def _watch(listener: Listener, lost: trio.Event, check_s: float) -> None:
    """Return when the connection is lost: reported by PostgreSQL's termination, or a failed probe."""
    while True:
        with trio.move_on_after(check_s):
            await lost.wait()
            return
        if not await listener.check():
            return
