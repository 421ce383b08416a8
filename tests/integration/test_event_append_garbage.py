"""Appending events leaves no reference cycles behind.

Every event-appending statement builds an :class:`storage.events.Append` and
its projections' plans; a cycle among them (a closure over the ``Append``
kept by its own plan was one) is garbage only the cycle collector frees,
thousands per second under load, and its pauses were the realtime latency's
tail (bench/RESULTS.md, 2026-11-29). Freed by reference counting alone means
``gc.collect()`` finds nothing.
"""

from __future__ import annotations

import datetime as dt
import gc

import pytest

from components import COMMITS
from domain.events import NewEvent
from storage import events


@pytest.fixture
def no_collector():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_an_append_with_a_realtime_projection_is_freed_without_the_cycle_collector(no_collector):
    snapshot = {"id": "pay_1", "object": "payment", "status": "succeeded", "customer_id": "cus_1"}
    append = events.Append("mer_1", [NewEvent("payment.succeeded", "pay_1", snapshot, "cus_1"),
                                     NewEvent("payment.created", "pay_1", snapshot, "cus_1")],
                           dt.datetime.now(dt.timezone.utc), projections=COMMITS.projections,
                           guard="upd")
    assert append.planned, "the realtime projection planned its CTEs for a customer's events"
    del append
    assert gc.collect() == 0
