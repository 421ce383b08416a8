"""The unit writer (actors/unit_writer.py) in process against the real PostgreSQL:
callers queue units of work, the writer runs what queued up as one transaction.

Driven as trio tests its primitives: callers are started in a nursery and left
to block (``wait_all_tasks_blocked``: every caller is queued and waiting for
its commit) before the writer starts, so the batch the writer takes is known.
Each unit records ``txid_current()``: units of one batch share a transaction id.

The exact-batch tests run one writer (``WRITERS = 1``): trio's ``receive()``
yields after taking an item, so two idle writers split a queued burst into its
first unit and the rest, whichever order they run in.
Once the writer runs, the tests wait on the callers' answers, not on
``wait_all_tasks_blocked``: a task waiting for the database thread counts as
blocked to trio.
"""

from __future__ import annotations

import asyncpg
import pytest
import trio
import trio.testing

from actors import unit_writer
from actors.runtime import AskTimeout
from actors.unit_writer import UnitWriter
from domain.errors import NotFound
from storage.database import Database

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def db(db):
    """The migrated database, with a table the units here write."""
    await db.run(_create_notes)
    return db


async def _create_notes(conn) -> None:
    await conn.execute("CREATE TABLE notes (label text PRIMARY KEY, merchant_id text NOT NULL, txid bigint NOT NULL)")


async def _note(conn, merchant_id: str, label: str) -> tuple[str, int]:
    """A unit of work: one row; answers ``(label, its transaction id)``."""
    txid = await conn.fetchval("INSERT INTO notes VALUES ($1, $2, txid_current()) RETURNING txid", label, merchant_id)
    return label, txid


async def _missing(conn, merchant_id: str, label: str) -> None:
    """A unit that answers a domain error (its own answer, not its batch's)."""
    raise NotFound(f"{label} is not there")


async def _buggy(conn, merchant_id: str, label: str) -> None:
    """A unit with a bug: a plain exception after it wrote."""
    await _note(conn, merchant_id, label)
    raise KeyError(label)


async def _notes(db: Database) -> list[dict]:
    async def read(conn):
        return [dict(r) for r in await conn.fetch("SELECT label, merchant_id, txid FROM notes ORDER BY label")]
    return await db.run(read)


async def _run_all(writer: UnitWriter, units: list[tuple], *, start_writer: bool = True,
                   timeout: float = 10) -> dict[str, object]:
    """Queue every ``(merchant_id, fn, label[, rank])`` before the writer runs, then run it;
    each label's answer (its result or the exception it raised)."""
    answers: dict[str, object] = {}

    async def call(merchant_id: str, fn, label: str, rank: int = 1) -> None:
        try:
            answers[label] = await writer.run_unit(merchant_id, timeout, fn, merchant_id, label, rank=rank)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            answers[label] = exc

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as callers:
            for unit in units:
                callers.start_soon(call, *unit)
            await trio.testing.wait_all_tasks_blocked()
            assert answers == {}  # all queued, nobody answered before a commit
            assert writer.batches == 0
            if start_writer:
                outer.start_soon(writer.run)
        outer.cancel_scope.cancel()
    return answers


async def test_units_queued_together_commit_in_one_transaction_in_merchant_order(db, monkeypatch):
    monkeypatch.setattr(unit_writer, "WRITERS", 1)
    writer = UnitWriter(db)
    units = [("m3", _note, "a"), ("m1", _note, "b"), ("m2", _note, "c"), ("m1", _note, "d"), ("m3", _note, "e")]
    answers = await _run_all(writer, units)
    assert writer.batches == 1
    assert writer.units == 5
    assert {label for label, _ in answers.values()} == {"a", "b", "c", "d", "e"}
    txids = {txid for _, txid in answers.values()}
    assert len(txids) == 1, answers  # one transaction, one commit
    # Ordered by merchant (the callers' own order is trio's scheduling, not the
    # test's): a fresh table keeps the rows in the order they were written.
    async def written_order(conn):
        return [r["merchant_id"] for r in await conn.fetch("SELECT merchant_id FROM notes ORDER BY ctid")]
    assert await db.run(written_order) == ["m1", "m1", "m2", "m3", "m3"]


async def test_a_merchants_key_only_units_run_before_its_other_units(db, monkeypatch):
    """Rank 0 (a unit that locks only an idempotency key) first within its merchant: a batch
    waiting on another batch's key holds none of the seq locks that batch may need next."""
    monkeypatch.setattr(unit_writer, "WRITERS", 1)
    writer = UnitWriter(db)
    units = [("m2", _note, "m2 payment"), ("m1", _note, "m1 payment"), ("m1", _note, "m1 key", 0),
             ("m2", _note, "m2 key", 0)]
    await _run_all(writer, units)
    assert writer.batches == 1

    async def written_order(conn):
        return [r["label"] for r in await conn.fetch("SELECT label FROM notes ORDER BY ctid")]
    assert await db.run(written_order) == ["m1 key", "m1 payment", "m2 key", "m2 payment"]


async def test_a_unit_that_fails_fails_alone(db, monkeypatch):
    monkeypatch.setattr(unit_writer, "WRITERS", 1)
    writer = UnitWriter(db)
    units = [("m1", _note, "first"), ("m2", _missing, "missing"), ("m3", _note, "dup"), ("m4", _note, "last")]
    await db.run(_note, "m0", "dup")  # "dup" is taken: its unit breaks a constraint
    answers = await _run_all(writer, units)
    assert writer.batches == 1
    assert isinstance(answers["missing"], NotFound)
    assert isinstance(answers["dup"], asyncpg.UniqueViolationError)
    assert answers["first"][0] == "first"
    assert answers["last"][0] == "last"
    # The database error rolled the batch back; the good units ran again alone and committed.
    assert [(n["label"], n["merchant_id"]) for n in await _notes(db)] == [
        ("dup", "m0"), ("first", "m1"), ("last", "m4")]


async def test_a_unit_with_a_bug_fails_alone(db, monkeypatch):
    """Not a domain or database error: the batch is rolled back and the others commit alone."""
    monkeypatch.setattr(unit_writer, "WRITERS", 1)
    writer = UnitWriter(db)
    answers = await _run_all(writer, [("m1", _note, "first"), ("m2", _buggy, "buggy"), ("m3", _note, "last")])
    assert writer.batches == 1
    assert isinstance(answers["buggy"], KeyError)
    assert answers["first"][0] == "first"
    assert answers["last"][0] == "last"
    assert [n["label"] for n in await _notes(db)] == ["first", "last"]  # nothing of the buggy unit


async def test_a_batch_holds_at_most_max_batch_units(db, monkeypatch):
    monkeypatch.setattr(unit_writer, "MAX_BATCH", 4)
    monkeypatch.setattr(unit_writer, "WRITERS", 1)
    writer = UnitWriter(db)
    answers = await _run_all(writer, [(f"m{i % 3}", _note, f"u{i:02}") for i in range(10)])
    assert writer.units == 10
    assert writer.batches == 3
    sizes: dict[int, int] = {}
    for _, txid in answers.values():
        sizes[txid] = sizes.get(txid, 0) + 1
    assert list(sizes.values()) == [4, 4, 2]  # in commit order (dicts keep insertion order)


async def test_two_writers_commit_every_queued_unit(db):
    """The production set-up (WRITERS = 2): every unit of a burst is committed,
    in at most as many transactions as there are batches."""
    writer = UnitWriter(db)
    answers = await _run_all(writer, [(f"m{i % 5}", _note, f"u{i:03}") for i in range(100)])
    assert writer.units == 100
    assert all(isinstance(a, tuple) for a in answers.values()), answers
    assert len({txid for _, txid in answers.values()}) == writer.batches
    assert writer.batches < 100  # batched, not one transaction per unit
    assert len(await _notes(db)) == 100


async def test_a_full_queue_makes_callers_wait_then_time_out(db, monkeypatch):
    monkeypatch.setattr(unit_writer, "QUEUE", 2)
    writer = UnitWriter(db)
    answers: dict[str, object] = {}

    async def call(label: str, timeout: float) -> None:
        try:
            answers[label] = await writer.run_unit("m1", timeout, _note, "m1", label)
        except AskTimeout as exc:
            answers[label] = exc

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as callers:
            callers.start_soon(call, "queued 1", 10)
            callers.start_soon(call, "queued 2", 10)
            await trio.testing.wait_all_tasks_blocked()
            # The queue is full and nobody writes: a third caller waits for room, then gives up.
            await call("refused", 0.2)
            assert isinstance(answers.pop("refused"), AskTimeout)
            assert answers == {}
            outer.start_soon(writer.run)
        outer.cancel_scope.cancel()
    assert sorted(answers) == ["queued 1", "queued 2"]
    assert [n["label"] for n in await _notes(db)] == ["queued 1", "queued 2"]  # the refused unit never ran


async def test_a_queued_unit_is_committed_even_if_its_caller_times_out(db):
    """Once queued a unit runs whatever its caller does: the caller's deadline
    covers the wait for room, not the commit (which is shielded)."""
    writer = UnitWriter(db)
    answer: list[object] = []

    async with trio.open_nursery() as outer:
        async def call() -> None:
            answer.append(await writer.run_unit("m1", 0.1, _note, "m1", "late"))

        outer.start_soon(call)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(0.3)  # past the caller's timeout, the writer not started yet
        assert answer == []
        outer.start_soon(writer.run)
        with trio.fail_after(10):
            while not answer:
                await trio.sleep(0.01)
        outer.cancel_scope.cancel()
    assert answer[0][0] == "late"
