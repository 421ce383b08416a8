"""The cycle collector's settings, and an actor that keeps its young generation small
and its old generation nearly empty.

Why an actor: CPython (3.11) collects the young generation when its
*allocation counter* passes the threshold, and every deallocation of a
container, however old, counts the counter down. A server holding thousands
of WebSockets replaces long-lived objects all the time: each read a
connection waits on (hypercorn's ``receive_some`` and trio's coroutines,
cancel scopes and cells under it, ~25 objects) is freed when data arrives and
a new one takes its place. The counter stays near zero while the young
generation grows, so each young collection walks a huge generation and stops
the process for long, the worst of the realtime latency tail (bench/RESULTS.md
"Measurements cited by the code"). Collecting the young generation on a timer bounds it by what survives
one interval, whatever the counter says.

Why freezing (issue 22): a full collection walks every object the collector
tracks; an idle WebSocket is ~175 of them (bench/gc_idle.py), so with 2,000
connections one took ~0.5 s (busy machine), growing with the connections.
Every ``freeze_every`` young collections the actor collects the middle
generation instead (what survived since the last freeze) and freezes what is
left (``gc.freeze``): what lives long (held connections, caches) leaves the
collector's sight, and a full collection walks only what survived the last
~2 s. Frozen objects are still freed by reference counting; what they can no
longer be is *cyclic* garbage, so a connection's objects are freed without
cycles (app/connection_teardown.py; measured: 0.3 cyclic objects left per
closed WebSocket). Why every 2 s rather than after a burst
of handshakes: idle connections renew their pending reads (~25 objects each)
whenever a frame comes or goes (pings), and the renewed ones would pile up
unfrozen. A cycle that dies after being frozen stays frozen until a thaw:
every ``thaw_s`` (an hour) everything is unfrozen and collected once, one long
pause, deliberately rare. ``GET /debug/gc`` (admin) shows the counts
(``gc.get_freeze_count()`` walks the frozen list, ~45 ms per 90,000 objects on
the busy 2-core box, so the actor never calls it).
"""

from __future__ import annotations

import gc

import trio

# 100 ms of survivors is a few thousand objects: each collection is short,
# and ten a second cost a few percent of a core, where the counter-driven ones
# were long pauses at random (bench/RESULTS.md "Measurements cited by the code").
YOUNG_INTERVAL_S = 0.1
# The counter-driven collections stay on as a backstop for allocation bursts
# (a thousand connections opening at once); 10,000 instead of 700 makes them
# rare, and full collections (every live object walked) rarer still.
THRESHOLDS = (10_000, 20, 50)


def tune() -> None:
    """Move start-up objects out of the collector's sight and collect less often by count.

    Freezing the start-up heap keeps modules, classes and the app's routing
    out of every later full collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


# Every 5 young collections (0.5 s): the middle generation's collection, then a freeze.
FREEZE_EVERY = 5
# A thaw (everything unfrozen and collected: one long pause) this often, for the
# cycles that died frozen (measured ~26 objects per 1,000 requests under load,
# none per closed WebSocket; bench/RESULTS.md).
THAW_S = 3600.0


async def collect_young(interval_s: float = YOUNG_INTERVAL_S, *, freeze_every: int = 0,
                        thaw_s: float = THAW_S, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Collect the young generation every ``interval_s``, for ever (the ``actor:gc-young`` task).

    Args:
      interval_s: time between collections; what survives it is what one collection walks.
      freeze_every: every so many young collections, collect the middle generation
        instead and freeze what survived (0: never freeze).
      thaw_s: instead of a freeze, unfreeze and collect everything once this long
        after the previous thaw (or the start).
    """
    task_status.started()
    tick = 0
    thawed = trio.current_time()
    while True:
        await trio.sleep(interval_s)
        tick += 1
        if not freeze_every or tick % freeze_every:
            gc.collect(0)
        elif trio.current_time() - thawed < thaw_s:
            gc.collect(1)
            gc.freeze()
        else:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            thawed = trio.current_time()
