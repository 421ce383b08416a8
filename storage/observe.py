"""Observing units of work: a span, a latency histogram by outcome, and the
state changes a unit reports, recorded only once it committed.

Kept apart from :mod:`storage.database` so the runner needs one line per
entry point (``with observed(fn):``) whatever shape the runner takes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from domain.errors import Unavailable
from telemetry import metrics, tracing


@contextlib.contextmanager
def observed(fn: Callable) -> Iterator[None]:
    """One unit of work, observed: a span, a latency histogram by outcome, and
    the state changes ``fn`` reports (:func:`telemetry.metrics.transition`)
    counted and logged only if the crossing succeeded, i.e. after commit.

    Used on the trio side, around the crossing: the span is current on the
    loop thread too (the unit runs in a copy of this context, see
    :meth:`storage.loop_thread.LoopThread.run`), so what ``fn`` writes
    (events) records the trace it is in, and the transitions land in the
    list set up here.
    """
    name = _unit_name(fn)
    started = time.perf_counter()
    outcome = "error"
    try:
        with tracing.span(f"db {name}", {"db.system": "postgresql", "db.operation.name": name}), \
                metrics.unit_of_work():
            yield
        outcome = "ok"
    except Unavailable:
        outcome = "unavailable"
        raise
    finally:
        metrics.DB_UNITS.labels(name, outcome).observe(time.perf_counter() - started)


def _unit_name(fn: Callable) -> str:
    """``payments.settle`` for ``storage.payments.settle``: low-cardinality, readable."""
    fn = getattr(fn, "func", fn)  # a functools.partial names its function
    module = (getattr(fn, "__module__", None) or "").rpartition(".")[2]
    qualname = getattr(fn, "__qualname__", type(fn).__name__)
    return f"{module}.{qualname}" if module else qualname
