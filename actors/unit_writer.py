"""Group commit for the hot write paths (docs/architecture.md decision 5).

Requests hand a unit of work (a storage function and its arguments) to this
actor instead of running it themselves; it takes what has queued up and runs
it as one transaction (:meth:`storage.database.Database.batch`). Under load one
commit, one WAL flush, carries many payments; when idle a batch is one unit
and adds no delay. Nobody is answered before their unit is committed, and a
unit that fails fails alone.

Units are ordered by merchant within a batch, so two batches take the
merchants' event-seq locks in the same order and cannot deadlock; within a
merchant, the units that lock only an idempotency key (``rank`` 0) go first, so
a batch waiting on another's key never holds a seq lock that one needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.runtime import AskTimeout, batches
from domain.errors import Unavailable
from storage.database import Database, UnitOfWork
from telemetry import tracing

log = logging.getLogger("paycast.unit_writer")
# Queue bound: a burst waits here, beyond it senders wait (back-pressure).
QUEUE = 1024
# Most units in one transaction: keeps a batch's hold on a merchant's seq row short.
MAX_BATCH = 64
# Writers running at once: one fills the next batch while another commits.
WRITERS = 2


@dataclass
class _Job:
    order: tuple[str, int]
    fn: UnitOfWork
    args: tuple
    done: trio.Event = field(default_factory=trio.Event)
    trace: tracing.Context = field(default_factory=tracing.capture)  # the writing request's
    result: object = None


class UnitWriter:
    """Runs units of work in batches, each batch one transaction.

    Args:
      db: the open database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._send, self._receive = trio.open_memory_channel[_Job](QUEUE)
        self.batches = 0
        self.units = 0

    async def run_unit(self, merchant_id: str, timeout: float, fn: UnitOfWork, *args: Any, rank: int = 1) -> Any:
        """Run ``fn(conn, *args)`` in the next batch and return what it returned.

        Args:
          merchant_id: whose data the unit writes (orders the batch).
          timeout: most seconds to wait for a place in the queue and the commit.
          rank: the unit's place among its merchant's in a batch: 0 for a unit
            that locks nothing but an idempotency key (module docstring).

        Raises:
          AskTimeout: not committed within ``timeout``.
          Exception: what ``fn`` raised (a domain error, :class:`Unavailable`).
        """
        job = _Job((merchant_id, rank), fn, args)  # captures the caller's span: the unit nests under it
        with trio.move_on_after(timeout):
            await self._send.send(job)
            # Once queued the unit runs whatever we do; wait for its outcome.
            with trio.CancelScope(shield=True):
                await job.done.wait()
        if not job.done.is_set():
            raise AskTimeout("The write could not be committed in time; retry.")
        if isinstance(job.result, BaseException):
            raise job.result
        return job.result

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for i in range(WRITERS):
                nursery.start_soon(self._writer, name=f"actor:unit-writer:{i}")

    async def _writer(self) -> None:
        async for batch in batches(self._receive, MAX_BATCH):
            batch.sort(key=lambda job: job.order)
            try:
                # A batch of one runs in its request's trace, as if the request ran
                # it; a larger one is a trace of its own, linked to each request's
                # (each unit still runs, and writes its events, in its request's context).
                if len(batch) == 1:
                    scope = tracing.attached(batch[0].trace)
                else:
                    scope = tracing.span("unit_writer batch", {"paycast.batch.size": len(batch)},
                                         links=[j.trace for j in batch])
                with scope:
                    results = await self._db.batch([(job.fn, job.args) for job in batch],
                                                   contexts=[job.trace for job in batch])
            except Unavailable as exc:
                results = [exc] * len(batch)
            except Exception as exc:  # noqa: BLE001 - answer everyone, keep the writer alive
                log.exception("batch of %d units failed", len(batch))
                results = [exc] * len(batch)
            self.batches += 1
            self.units += len(batch)
            for job, result in zip(batch, results):
                job.result = result
                job.done.set()
