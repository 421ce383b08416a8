"""The cycle collector's settings, and an actor that keeps its young generation small.

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


async def collect_young(interval_s: float = YOUNG_INTERVAL_S, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Collect the young generation every ``interval_s``, for ever (the ``actor:gc-young`` task).

    Args:
      interval_s: time between collections; what survives it is what one collection walks.
    """
    task_status.started()
    while True:
        await trio.sleep(interval_s)
        gc.collect(0)
