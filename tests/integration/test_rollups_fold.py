"""storage.rollups.fold with the snapshots a process keeps between its folds (storage.rollups.Known),
against the real PostgreSQL: a payment's later events fold without re-reading its earlier ones, the
result equals a rebuild from the event log, and a fold by anyone else in between makes them stale."""

from __future__ import annotations

import pytest

from domain.payments import OutcomeKind
from domain import rollups as domain_rollups
from storage import rollups
from tests.integration.storage_api import StorageAPI

pytestmark = pytest.mark.timeout(60)


async def _rollups(db, merchant_id: str) -> list[tuple]:
    rows = await db.run(lambda conn: conn.fetch(
        "SELECT period_s, bucket, dimension, connector, status, n FROM stats_rollups WHERE merchant_id = $1"
        " AND n <> 0 ORDER BY 1, 2, 3, 4, 5", merchant_id))
    return [tuple(r) for r in rows]


async def _fold(db, merchant_id: str, known: rollups.Known | None) -> rollups.Folded:
    folded = await db.transaction(rollups.fold, merchant_id, rollups.BATCH, known)
    if known is not None and folded.moved:
        known.keep(merchant_id, folded)
    return folded


@pytest.fixture
def previous_reads(monkeypatch) -> list[list[str]]:
    """The payment ids each fold read from the log (storage.rollups._previous)."""
    reads: list[list[str]] = []
    real = rollups._previous

    async def recorded(conn, merchant_id, object_ids, before_seq):
        reads.append(sorted(object_ids))
        return await real(conn, merchant_id, object_ids, before_seq)

    monkeypatch.setattr(rollups, "_previous", recorded)
    return reads


async def _begun(api: StorageAPI, merchant_id: str) -> tuple[dict, str]:
    """A payment created (its ``payment.created`` event) and an attempt begun on it."""
    pay = await api.create_payment(merchant_id)
    return pay, await api.begin_attempt(merchant_id, pay["id"])


async def test_kept_snapshots_replace_the_log_read_and_fold_as_a_rebuild_does(db, previous_reads):
    api = StorageAPI(db)
    merchant = await api.create_merchant()
    known = rollups.Known()
    a, a_attempt = await _begun(api, merchant)
    b, b_attempt = await _begun(api, merchant)
    await _fold(db, merchant, known)  # both created
    await api.settle(merchant, a["id"], a_attempt, OutcomeKind.SUCCEEDED, "txn_a")
    await api.settle(merchant, b["id"], b_attempt, OutcomeKind.DECLINED, "txn_b")
    c, _ = await _begun(api, merchant)
    folded = await _fold(db, merchant, known)
    assert folded.moved == 3  # a and b settled, c created
    assert previous_reads == [[], []]  # a and b came from the kept snapshots
    incremental = await _rollups(db, merchant)

    # The same log folded from seq 0 by a process that kept nothing.
    await db.run(lambda conn: conn.execute("DELETE FROM stats_cursors WHERE merchant_id = $1", merchant))
    await _fold(db, merchant, None)
    assert await _rollups(db, merchant) == incremental
    assert {(r[2], r[4]) for r in incremental if r[0] == domain_rollups.ALL_TIME} >= {
        (domain_rollups.PAYMENT, "succeeded"), (domain_rollups.PAYMENT, "failed"), (domain_rollups.PAYMENT, "requires_confirmation")}


async def test_a_fold_by_another_process_in_between_makes_the_kept_snapshots_stale(db, previous_reads):
    api = StorageAPI(db)
    merchant = await api.create_merchant()
    known = rollups.Known()
    a, a_attempt = await _begun(api, merchant)
    await _fold(db, merchant, known)
    b, _ = await _begun(api, merchant)
    await _fold(db, merchant, None)  # another worker folds b: the cursor moves past what `known` ends at
    await api.settle(merchant, a["id"], a_attempt, OutcomeKind.SUCCEEDED, "txn_a")
    await _fold(db, merchant, known)
    assert previous_reads[-1] == [a["id"]]  # read from the log again
    incremental = await _rollups(db, merchant)
    await db.run(lambda conn: conn.execute("DELETE FROM stats_cursors WHERE merchant_id = $1", merchant))
    await _fold(db, merchant, None)
    assert await _rollups(db, merchant) == incremental


def test_kept_snapshots_are_bounded_least_recently_folded_first():
    known = rollups.Known(limit=3)
    known.keep("mer_a", rollups.Folded(2, 2, {"pay_1": {}, "pay_2": {}}))
    known.keep("mer_b", rollups.Folded(2, 2, {"pay_3": {}, "pay_4": {}}))
    assert len(known) == 3
    assert list(known.at("mer_a", 2)) == ["pay_2"]  # mer_a's oldest went first
    known.keep("mer_a", rollups.Folded(1, 3, {"pay_2": {"status": "succeeded"}}))  # refreshed: counted once
    assert len(known) == 3
    assert known.at("mer_b", 1) == {}  # another cursor: stale, dropped
    assert len(known) == 1
    assert known.at("mer_a", 3) == {"pay_2": {"status": "succeeded"}}
