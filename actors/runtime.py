"""The actor runtime: bounded inboxes, ask/tell, a registry of virtual actors
started on demand and passivated when idle, and supervised singletons.

Every actor is a trio task in a nursery owned by the runtime, named
``actor:<kind>:<key>`` so it shows in ``/debug/tasks``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import trio

from domain.errors import PaycastError, Unavailable
from telemetry import logs, metrics, tracing

log = logging.getLogger("paycast.actors")
K = TypeVar("K", bound=Hashable)


class AskTimeout(Unavailable):
    """The actor did not answer in time (overloaded or stuck)."""


class ActorGone(Exception):
    """The actor passivated or stopped before taking the message; ask again."""


@dataclass
class _Reply:
    done: trio.Event = field(default_factory=trio.Event)
    value: Any = None
    error: BaseException | None = None

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.value, self.error = value, error
            self.done.set()


@dataclass
class _Envelope:
    message: Any
    reply: _Reply | None
    # The sender's trace context: the actor task was spawned by whoever came
    # first, so its own context says nothing about this message's trace.
    trace: tracing.Context = field(default_factory=tracing.capture)


class Mailbox:
    """The sending side of one actor: a bounded inbox.

    The bound is the back-pressure: a sender waits (up to its timeout) when the
    actor is behind, instead of queueing without limit.
    """

    def __init__(self, size: int, kind: str = "actor") -> None:
        self._send, self.receive = trio.open_memory_channel[_Envelope](size)
        self._kind = kind

    def _observe_depth(self) -> None:
        metrics.observe_mailbox(self._kind, self._send.statistics().current_buffer_used)

    async def ask(self, message: Any, timeout: float) -> Any:
        """Send ``message`` and wait for the actor's answer.

        Raises:
          AskTimeout: no answer within ``timeout`` seconds.
          ActorGone: the actor stopped taking messages.
          Exception: whatever the actor's handler raised.
        """
        reply = _Reply()
        with trio.move_on_after(timeout) as scope:
            try:
                await self._send.send(_Envelope(message, reply))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise ActorGone() from None
            self._observe_depth()
            await reply.done.wait()
        if scope.cancelled_caught:
            raise AskTimeout("The request timed out waiting for its turn; retry shortly.")
        if reply.error is not None:
            raise reply.error
        return reply.value

    def tell_nowait(self, message: Any) -> bool:
        """Deliver without waiting; False when the inbox is full or closed."""
        try:
            self._send.send_nowait(_Envelope(message, None))
            self._observe_depth()
            return True
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False

    def close(self) -> None:
        self._send.close()


Handler = Callable[[K, Any], Awaitable[Any]]


class Registry(Generic[K]):
    """Virtual actors of one kind: one per key, started on demand, passivated when idle.

    Args:
      nursery: where the actors run (owned by the runtime).
      kind: the actor kind, used in task names (``actor:payment:pay_...``).
      handler: ``await handler(key, message)`` processes one message; messages
        of one key are handled one at a time, in order.
      idle_s: an actor with an empty inbox for this long stops.
      inbox_size: the bound of each inbox.
    """

    def __init__(self, nursery: trio.Nursery, kind: str, handler: Handler, *, idle_s: float,
                 inbox_size: int) -> None:
        self._nursery = nursery
        self.kind = kind
        self._handler = handler
        self._idle_s = idle_s
        self._inbox_size = inbox_size
        self._live: dict[K, Mailbox] = {}
        self.started = 0
        self.crashes = 0

    def __len__(self) -> int:
        return len(self._live)

    async def ask(self, key: K, message: Any, timeout: float) -> Any:
        """Ask the actor for ``key`` (starting it if needed)."""
        for _ in range(3):
            try:
                return await self._mailbox(key).ask(message, timeout)
            except ActorGone:
                continue  # it passivated between lookup and send: a new one takes over
        raise Unavailable("The actor could not be reached; retry shortly.")

    def tell_nowait(self, key: K, message: Any) -> bool:
        return self._mailbox(key).tell_nowait(message)

    def is_live(self, key: K) -> bool:
        """Whether the actor for ``key`` is running now (it may stop at its next idle timeout)."""
        return key in self._live

    def _mailbox(self, key: K) -> Mailbox:
        box = self._live.get(key)
        if box is None:
            box = Mailbox(self._inbox_size, self.kind)
            self._live[key] = box
            self.started += 1
            self._nursery.start_soon(self._run, key, box, name=f"actor:{self.kind}:{key}")
        return box

    async def _run(self, key: K, box: Mailbox) -> None:
        try:
            while True:
                with trio.move_on_after(self._idle_s):
                    envelope = await box.receive.receive()
                    await self._deliver(key, envelope)
                    continue
                break
        finally:
            # Passivate: unregister first so new senders get a fresh actor, then
            # close the inbox and finish what was already accepted.
            if self._live.get(key) is box:
                del self._live[key]
            box.close()
            with trio.CancelScope(shield=True):
                while True:
                    try:
                        envelope = box.receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                        break
                    if envelope.reply:
                        envelope.reply.resolve(error=ActorGone())

    async def _deliver(self, key: K, envelope: _Envelope) -> None:
        if self.kind == "payment":
            logs.payment_id.set(str(key))
        try:
            with tracing.attached(envelope.trace), \
                    tracing.span(f"actor {self.kind} {type(envelope.message).__name__}",
                                 {"paycast.actor.kind": self.kind, "paycast.actor.key": str(key)}):
                result = await self._handler(key, envelope.message)
        except PaycastError as exc:
            if envelope.reply:
                envelope.reply.resolve(error=exc)
        except Exception as exc:  # noqa: BLE001 - a crash restarts the actor's state, not the process
            self.crashes += 1
            log.exception("actor %s:%s crashed handling %r", self.kind, key, type(envelope.message).__name__)
            if envelope.reply:
                envelope.reply.resolve(error=exc)
        else:
            if envelope.reply:
                envelope.reply.resolve(result)


class Handlers:
    """An actor's dispatch table: ``@handles(Confirm)`` on a method registers it
    for that message type; :meth:`dispatch` finds it by the message's type.

    Args:
      kind: the actor kind (for the error on an unknown message).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.table: dict[type, Callable[..., Awaitable]] = {}

    def __call__(self, message_type: type):
        def register(method):
            if message_type in self.table:
                raise TypeError(f"{self.kind}: two handlers for {message_type.__name__}")
            self.table[message_type] = method
            return method
        return register

    async def dispatch(self, actor: object, key: str, message: object):
        """``await handler(actor, key, message)`` for the message's type.

        Raises:
          TypeError: no handler for this message type.
        """
        handler = self.table.get(type(message))
        if handler is None:
            raise TypeError(f"unknown {self.kind} message {message!r}")
        return await handler(actor, key, message)


async def batches(receive: trio.MemoryReceiveChannel, max_batch: int):
    """Yield lists of what has queued up: wait for one item, then take what else is
    already there, up to ``max_batch``. The batching of group commit: under load
    a batch is large, when idle it is one item and adds no delay."""
    async for first in receive:
        batch = [first]
        while len(batch) < max_batch:
            try:
                batch.append(receive.receive_nowait())
            except trio.WouldBlock:
                break
        yield batch


async def supervise(name: str, body: Callable[[], Awaitable[None]], *,
                    first_backoff: float = 0.1, max_backoff: float = 30.0) -> None:
    """Run ``body`` forever, restarting it with exponential backoff when it crashes.

    Returns when ``body`` returns normally; cancellation propagates.
    """
    backoff = first_backoff
    while True:
        started = trio.current_time()
        try:
            await body()
            return
        except Unavailable as exc:  # an outage, not a bug: one line per restart, no traceback
            log.warning("actor %s stopped: %s; restarting in %.1fs", name, exc.message, backoff)
        except Exception:  # noqa: BLE001
            log.exception("actor %s crashed; restarting in %.1fs", name, backoff)
        if trio.current_time() - started > max_backoff:
            backoff = first_backoff  # it ran fine for a while: this is a fresh failure
        await trio.sleep(backoff)
        backoff = min(max_backoff, backoff * 2 if math.isfinite(backoff) else max_backoff)
