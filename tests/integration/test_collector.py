"""actors/collector.py: the young generation stays small when old objects are replaced.

The pattern it exists for: long-lived objects (a WebSocket's pending read)
are freed and replaced by new ones all the time. Each deallocation counts
CPython's allocation counter down, so the counter never reaches its
threshold while the young generation fills with the replacements; without
the actor one late collection walks all of them in one long pause.
"""

from __future__ import annotations

import gc

import trio

from actors import collector


def _replace_all(held: list) -> None:
    for i in range(len(held)):
        held[i] = [i]  # the old list is freed (counter -1), the new one allocated (+1)


async def test_replaced_objects_do_not_pile_up_in_the_young_generation():
    held = [[i] for i in range(30_000)]
    gc.collect()  # the originals are old now
    thresholds = gc.get_threshold()
    gc.set_threshold(*collector.THRESHOLDS)
    try:
        _replace_all(held)
        assert len(gc.get_objects(0)) >= 30_000  # what the counter let through: a long pause to come
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.collect_young, 0.05)
            await trio.sleep(0.2)
            assert len(gc.get_objects(0)) < 1_000
            _replace_all(held)
            await trio.sleep(0.2)
            assert len(gc.get_objects(0)) < 1_000
            nursery.cancel_scope.cancel()
    finally:
        gc.set_threshold(*thresholds)
