"""The actor runtime in process (actors/runtime.py): a :class:`Registry`'s actors
and their bounded :class:`Mailbox`, driven in a nursery the way trio tests its own
primitives (``trio/_tests/test_sync.py``): start the actors, let every task run
until it blocks (``wait_all_tasks_blocked``), assert on what they did.

No database: the handlers are plain functions that record what they were given
and wait on a gate the test opens. ``autojump_clock`` (pytest-trio) makes the
timeouts (ask, idle passivation) pass instantly once every task is blocked.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors.runtime import ActorGone, AskTimeout, Mailbox, Registry, batches
from domain.errors import NotFound


class Recorder:
    """A handler: records ``(key, message)`` when it starts one, then waits for
    its key's gate (open unless the test closed it) and answers ``(key, message)``.

    ``"boom"`` raises a bug (RuntimeError), ``"missing"`` a domain error.
    """

    def __init__(self) -> None:
        self.started: list[tuple[str, object]] = []
        self.finished: list[tuple[str, object]] = []
        self.gates: dict[str, trio.Event] = {}

    def close(self, key: str) -> None:
        self.gates[key] = trio.Event()

    def open(self, key: str) -> None:
        self.gates.pop(key).set()

    async def __call__(self, key: str, message: object) -> object:
        self.started.append((key, message))
        if key in self.gates:
            await self.gates[key].wait()
        if message == "boom":
            raise RuntimeError("handler bug")
        if message == "missing":
            raise NotFound("no such thing")
        self.finished.append((key, message))
        return key, message


async def test_one_keys_messages_are_handled_one_at_a_time_in_order(autojump_clock):
    handler = Recorder()
    async with trio.open_nursery() as nursery:
        registry = Registry(nursery, "test", handler, idle_s=60, inbox_size=8)
        handler.close("a")
        for i in range(5):
            assert registry.tell_nowait("a", i)
        await trio.testing.wait_all_tasks_blocked()
        # The first message is being handled; the other four wait in the inbox.
        assert handler.started == [("a", 0)]
        assert handler.finished == []
        handler.open("a")
        await trio.testing.wait_all_tasks_blocked()
        assert handler.finished == [("a", i) for i in range(5)]
        assert handler.started == handler.finished
        assert registry.started == 1
        nursery.cancel_scope.cancel()


async def test_keys_do_not_wait_for_each_other(autojump_clock):
    handler = Recorder()
    async with trio.open_nursery() as nursery:
        registry = Registry(nursery, "test", handler, idle_s=60, inbox_size=8)
        handler.close("slow")
        registry.tell_nowait("slow", 1)
        assert await registry.ask("fast", 2, timeout=5) == ("fast", 2)
        await trio.testing.wait_all_tasks_blocked()
        assert handler.finished == [("fast", 2)]
        assert registry.is_live("slow")
        assert len(registry) == 2
        handler.open("slow")
        await trio.testing.wait_all_tasks_blocked()
        assert handler.finished == [("fast", 2), ("slow", 1)]
        nursery.cancel_scope.cancel()


async def test_a_full_inbox_refuses_tell_and_times_out_ask(autojump_clock):
    handler = Recorder()
    async with trio.open_nursery() as nursery:
        registry = Registry(nursery, "test", handler, idle_s=60, inbox_size=2)
        handler.close("a")
        assert registry.tell_nowait("a", "taken")  # the actor takes it and waits at the gate
        await trio.testing.wait_all_tasks_blocked()
        assert registry.tell_nowait("a", "queued 1")
        assert registry.tell_nowait("a", "queued 2")
        # The bound is the back-pressure: the third waiting message is refused...
        assert not registry.tell_nowait("a", "refused")
        # ...and an ask waits for room, up to its timeout.
        before = trio.current_time()
        with pytest.raises(AskTimeout):
            await registry.ask("a", "asked", timeout=3)
        assert trio.current_time() - before == pytest.approx(3)
        handler.open("a")
        await trio.testing.wait_all_tasks_blocked()
        assert handler.finished == [("a", "taken"), ("a", "queued 1"), ("a", "queued 2")]
        # Room again: the same ask now goes through.
        assert await registry.ask("a", "asked", timeout=3) == ("a", "asked")
        nursery.cancel_scope.cancel()


async def test_errors_reach_the_asker_and_a_crash_does_not_stop_the_actor(autojump_clock):
    handler = Recorder()
    async with trio.open_nursery() as nursery:
        registry = Registry(nursery, "test", handler, idle_s=60, inbox_size=8)
        with pytest.raises(NotFound):
            await registry.ask("a", "missing", timeout=5)
        assert registry.crashes == 0  # a domain error is an answer, not a crash
        with pytest.raises(RuntimeError, match="handler bug"):
            await registry.ask("a", "boom", timeout=5)
        assert registry.crashes == 1
        registry.tell_nowait("a", "boom")  # nobody to tell: logged and counted
        assert await registry.ask("a", "after", timeout=5) == ("a", "after")
        assert registry.crashes == 2
        assert registry.started == 1  # the same actor throughout
        nursery.cancel_scope.cancel()


async def test_an_idle_actor_passivates_and_the_next_message_starts_a_new_one(autojump_clock):
    handler = Recorder()
    async with trio.open_nursery() as nursery:
        registry = Registry(nursery, "test", handler, idle_s=10, inbox_size=8)
        assert await registry.ask("a", 1, timeout=5) == ("a", 1)
        await trio.sleep(9)
        assert registry.is_live("a")
        await trio.sleep(2)
        await trio.testing.wait_all_tasks_blocked()
        assert not registry.is_live("a")
        assert len(registry) == 0
        assert await registry.ask("a", 2, timeout=5) == ("a", 2)
        assert registry.started == 2
        nursery.cancel_scope.cancel()


async def test_messages_left_in_a_closed_inbox_are_answered_actor_gone(autojump_clock):
    """A passivating actor closes its inbox and answers what it still held with
    ActorGone, which Registry.ask turns into a retry on a fresh actor."""
    box = Mailbox(4)
    box.close()
    with pytest.raises(ActorGone):
        await box.ask("late", timeout=1)
    assert not box.tell_nowait("late")


async def test_batches_take_what_queued_up_to_the_limit(autojump_clock):
    """Group commit's batching: one item when idle, everything waiting (up to
    max_batch) under load, in order."""
    send, receive = trio.open_memory_channel(100)
    seen: list[list[int]] = []

    async def consume() -> None:
        async for batch in batches(receive, 4):
            seen.append(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        send.send_nowait(0)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [[0]]  # idle: a batch of one, at once
        for i in range(1, 11):
            send.send_nowait(i)
        await trio.testing.wait_all_tasks_blocked()
        assert seen == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
        nursery.cancel_scope.cancel()
