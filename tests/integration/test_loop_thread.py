"""storage.loop_thread.LoopThread, the crossing from trio to asyncpg's uvloop thread
(docs/architecture.md decision 1): results and errors come back, crossings
coalesce and each still gets its own result and context, a crossed unit runs to
its end whatever cancels its caller, and a unit outliving its trio run harms
nothing. A real uvloop thread; the last tests cross to the real database."""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading

import pytest
import trio
import trio.testing

from storage.loop_thread import LoopThread

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


@pytest.fixture
def loop_thread():
    thread = LoopThread(name="test-loop-thread")
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


async def value(x):
    return x


def count_calls(thread: LoopThread, name: str, then=None) -> list[int]:
    """Count the calls of ``thread.<name>`` (calls ``then(count)`` after each one)."""
    calls = [0]
    original = getattr(thread, name)

    def counting(*args):
        original(*args)
        calls[0] += 1
        if then is not None:
            then(calls[0])

    setattr(thread, name, counting)
    return calls


async def test_results_and_exceptions_cross_back(loop_thread):
    async def where(x):
        await asyncio.sleep(0)
        return x, threading.current_thread().name

    async def fails():
        await asyncio.sleep(0)
        raise LookupError("from the loop")

    assert await loop_thread.run(where(42)) == (42, "test-loop-thread")
    with pytest.raises(LookupError, match="from the loop"):
        await loop_thread.run(fails())
    assert await loop_thread.run(value(None)) is None


async def test_200_concurrent_crossings_each_get_their_own_result(loop_thread):
    async def double(i):
        await asyncio.sleep(random.random() / 100)
        return i * 2

    results = {}

    async def cross(i):
        results[i] = await loop_thread.run(double(i))

    for _ in range(3):
        results.clear()
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(cross, i)
        assert results == {i: i * 2 for i in range(200)}


async def test_crossings_made_while_the_loop_is_busy_ride_one_pick_up_and_one_wake_up(loop_thread):
    # The loop is held while 200 crossings are made, and trio is held while they all finish.
    n = 200
    gate, all_finished = threading.Event(), threading.Event()
    pick_ups = count_calls(loop_thread, "_start_all")
    wake_ups = count_calls(loop_thread, "_wake_all")
    count_calls(loop_thread, "_finished", then=lambda count: count == n and all_finished.set())
    loop_thread._loop.call_soon_threadsafe(gate.wait, 10)
    results = {}

    async def cross(i):
        request_id.set(f"req-{i}")
        results[i] = await loop_thread.run(tagged(i))

    async def tagged(i):
        await asyncio.sleep(0)
        return i, request_id.get()

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(cross, i)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
        assert all_finished.wait(10)  # blocks trio's thread: every result lands before trio takes any
    assert results == {i: (i, f"req-{i}") for i in range(n)}
    assert (pick_ups[0], wake_ups[0]) == (1, 1)


async def test_the_unit_runs_in_a_copy_of_the_callers_context(loop_thread):
    async def read_then_write():
        seen = request_id.get()
        request_id.set("set on the loop")
        return seen

    request_id.set("req-1")
    assert await loop_thread.run(read_then_write()) == "req-1"
    assert request_id.get() == "req-1"  # a copy: the unit's write stays there


async def test_a_cancelled_caller_waits_for_the_unit_then_sees_cancelled(loop_thread):
    unit_started = threading.Event()
    side_effects, got, after_checkpoint = [], [], []

    async def unit():
        unit_started.set()
        await asyncio.sleep(0.3)
        side_effects.append("committed")
        return "result"

    async def caller(task_status=trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as scope:
            task_status.started(scope)
            got.append(await loop_thread.run(unit()))
            await trio.lowlevel.checkpoint()
            after_checkpoint.append(True)
        assert scope.cancelled_caught

    async with trio.open_nursery() as nursery:
        scope = await nursery.start(caller)
        await trio.to_thread.run_sync(unit_started.wait, 10)
        started = trio.current_time()
        scope.cancel()
    assert trio.current_time() - started >= 0.2  # the caller waited for the unit
    assert side_effects == ["committed"]
    assert got == ["result"]  # the result arrives, Cancelled at the next checkpoint
    assert after_checkpoint == []


def test_a_unit_finishing_after_its_trio_run_ended_harms_nothing(loop_thread):
    release, finished = threading.Event(), threading.Event()
    errors = []
    loop_thread._loop.set_exception_handler(lambda loop, context: errors.append(context))

    async def outlives_its_run():
        while not release.is_set():
            await asyncio.sleep(0.005)
        finished.set()
        return "nobody waits"

    async def cross_and_leave():
        # Step the crossing by hand up to its wait, then end the run without it.
        crossing = loop_thread.run(outlives_its_run())
        crossing.send(None)
        return crossing

    crossing = trio.run(cross_and_leave)
    release.set()
    assert finished.wait(10)
    crossing.close()
    # The unit's result met trio.RunFinishedError; a new run's crossing still comes back.
    assert trio.run(loop_thread.run, value(7)) == 7
    assert loop_thread._inbox == {}
    assert errors == []


def test_a_crossing_outside_trio_fails_and_nothing_crosses(loop_thread):
    ran = []

    async def unit():
        ran.append(True)

    coro = unit()
    with pytest.raises(RuntimeError):
        asyncio.run(loop_thread.run(coro))
    coro.close()
    assert trio.run(loop_thread.run, value(1)) == 1
    assert ran == []


async def test_a_crossing_after_stop_fails_every_time():
    thread = LoopThread()
    thread.start()
    thread.stop()
    for _ in range(2):  # the failed crossing does not stay queued (which would hang the next one)
        coro = value(1)
        with pytest.raises(RuntimeError, match="closed"):
            await thread.run(coro)
        coro.close()


async def test_round_trips_to_the_database(db):
    async def add_one(conn, x):
        return await conn.fetchval("SELECT $1::int + 1", x)

    results = {}

    async def cross(i):
        results[i] = await db.run(add_one, i)

    async with trio.open_nursery() as nursery:
        for i in range(50):
            nursery.start_soon(cross, i)
    assert results == {i: i + 1 for i in range(50)}


async def test_a_cancelled_caller_does_not_roll_back_its_transaction(db):
    await db.run(lambda conn: conn.execute("CREATE TABLE loop_thread_probe (note text NOT NULL)"))

    async def slow_insert(conn):
        await conn.execute("SELECT pg_sleep(0.3)")
        await conn.execute("INSERT INTO loop_thread_probe (note) VALUES ('committed')")
        return "inserted"

    got = []
    with trio.move_on_after(0.05) as scope:
        got.append(await db.transaction(slow_insert))
        await trio.lowlevel.checkpoint()
        got.append("after the checkpoint")
    assert scope.cancelled_caught
    assert got == ["inserted"]
    assert await db.run(lambda conn: conn.fetchval("SELECT array_agg(note) FROM loop_thread_probe")) == ["committed"]
