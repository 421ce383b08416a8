"""Group commit for confirmed payments (DESIGN.md decision 5).

Requests that created and confirmed a payment against an in-process connector
hand the write to this actor; it drains what has queued up and commits it as
one transaction. Under load one commit (one WAL flush, one lock on each
merchant's event seq) carries many payments; when idle a batch is one payment
and costs nothing extra. Nobody is answered before their row is committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from actors.runtime import AskTimeout, batches
from domain.errors import PaycastError, Unavailable
from storage import payments as store
from telemetry import tracing

log = logging.getLogger("paycast.payment_writer")
# Queue bound: a burst waits here, beyond it senders wait (back-pressure).
QUEUE = 1024
# Most payments in one transaction: keeps each commit short enough that the
# merchant's seq lock is never held for long.
MAX_BATCH = 64
# Writers running at once: one fills the next batch while another commits.
WRITERS = 2


@dataclass
class _Job:
    item: store.Confirmed
    done: trio.Event = field(default_factory=trio.Event)
    trace: tracing.Context = field(default_factory=tracing.capture)  # the writing request's
    result: dict | None = None
    error: BaseException | None = None


class PaymentWriter:
    def __init__(self, db) -> None:
        self._db = db
        self._send, self._receive = trio.open_memory_channel[_Job](QUEUE)
        self.batches = 0
        self.payments = 0

    async def write(self, item: store.Confirmed, timeout: float) -> dict:
        """Commit one confirmed payment (batched with others) and return its snapshot.

        Raises:
          AskTimeout: not committed within ``timeout``.
          PaycastError: the item's own check failed (e.g. its order).
        """
        with tracing.span("payment_writer write"):
            job = _Job(item)  # captures this span: a batch of one nests under it
            with trio.move_on_after(timeout):
                await self._send.send(job)
                # Once queued the write happens whatever we do; wait for its outcome.
                with trio.CancelScope(shield=True):
                    await job.done.wait()
        if not job.done.is_set():
            raise AskTimeout("The payment could not be written in time; retry.")
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for i in range(WRITERS):
                nursery.start_soon(self._writer, name=f"actor:payment-writer:{i}")

    async def _writer(self) -> None:
        async for batch in batches(self._receive, MAX_BATCH):
            await self._commit(batch)

    async def _commit(self, batch: list[_Job]) -> None:
        # A batch of one belongs to its request's trace; a larger one is its own
        # trace, linked to each request's (their events still carry their own trace).
        with tracing.attached(batch[0].trace if len(batch) == 1 else None), \
                tracing.span("payment_writer batch", {"paycast.batch.size": len(batch)},
                             links=[j.trace for j in batch] if len(batch) > 1 else ()):
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Job]) -> None:
        try:
            results = await self._db.transaction(store.insert_confirmed_batch, [j.item for j in batch])
        except Unavailable as exc:
            results = [exc] * len(batch)
        except Exception:  # noqa: BLE001 - one bad item must not sink the others
            log.exception("batch of %d payments failed; writing them one by one", len(batch))
            results = []
            for job in batch:
                try:
                    results.append(await self._db.transaction(store.insert_confirmed, job.item))
                except PaycastError as exc:
                    results.append(exc)
                except Exception as exc:  # noqa: BLE001
                    results.append(exc)
        self.batches += 1
        self.payments += len(batch)
        for job, result in zip(batch, results):
            if isinstance(result, BaseException):
                job.error = result
            else:
                job.result = result
            job.done.set()
