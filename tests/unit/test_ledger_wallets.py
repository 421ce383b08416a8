"""domain/ledger.py and domain/wallets.py: every movement is a balanced pair,
balances are sums, withdrawals reserve only what is available, and the
transaction state machine writes each movement once."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from domain import ledger, wallets
from domain.errors import InsufficientFunds
from domain.ledger import Book, Movement
from app.errors import status_of  # the HTTP status is the edge's mapping


@pytest.mark.parametrize("movement", list(Movement))
def test_every_movement_is_a_balanced_pair(movement):
    debit, credit = ledger.entries(movement, "acct_1", 250)
    assert debit.amount == -250
    assert credit.amount == 250
    assert debit.amount + credit.amount == 0
    assert (debit.book, credit.book) == ledger.FLOWS[movement]
    for entry in (debit, credit):
        assert entry.movement is movement
        assert (entry.account_id is None) == (entry.book is Book.EXTERNAL)


@pytest.mark.parametrize("amount", [0, -1, True, 1.0])
def test_movements_move_positive_amounts(amount):
    with pytest.raises(ValueError):
        ledger.entries(Movement.DEPOSIT, "acct_1", amount)


def test_balances_are_sums_of_both_books():
    b = ledger.balances([("available", 500), ("available", -200), ("reserved", 200)])
    assert b.available == 300
    assert b.reserved == 200
    assert b.balance == 500
    assert ledger.balances([]) == ledger.Balances(0, 0)


def test_reserve_only_what_is_available():
    ledger.check_reserve(100, 100)
    with pytest.raises(InsufficientFunds) as err:
        ledger.check_reserve(100, 101)
    assert err.value.code == "insufficient_funds"
    assert status_of(err.value) == 409
    assert err.value.type == "state_error"


def test_transaction_table():
    assert wallets.step("deposit", "pending", wallets.Trigger.SUCCEED) == wallets.Step(
        wallets.Status.COMPLETED, Movement.DEPOSIT, "account.deposit.completed")
    assert wallets.step("deposit", "pending", wallets.Trigger.FAIL) == wallets.Step(
        wallets.Status.FAILED, None, "account.deposit.failed")
    assert wallets.step("withdrawal", "pending", wallets.Trigger.SUCCEED).movement is Movement.PAYOUT
    assert wallets.step("withdrawal", "pending", wallets.Trigger.FAIL).movement is Movement.RELEASE
    for type_ in wallets.Type:
        for status in ("completed", "failed"):
            for trigger in wallets.Trigger:
                assert wallets.step(type_, status, trigger) is None  # ended: nothing moves again


def test_movements_by_state_follow_the_table():
    for (type_, status, trigger), step in wallets.TRANSITIONS.items():
        before = wallets.MOVEMENTS_BY_STATE[(type_, status)]
        after = wallets.MOVEMENTS_BY_STATE[(type_, step.status)]
        assert after == before | ({step.movement} if step.movement else set())
    assert wallets.MOVEMENTS_BY_STATE[(wallets.Type.WITHDRAWAL, wallets.Status.PENDING)] == {
        wallets.ON_CREATE[wallets.Type.WITHDRAWAL]}


# A random life of one wallet: deposits, withdrawals, and outcomes in any order,
# repeated outcomes included. The ledger stays consistent and never negative.
ops = st.lists(st.tuples(st.sampled_from(["deposit", "withdraw", "succeed", "fail"]), st.integers(1, 5000),
                         st.integers(0, 50)), max_size=80)


@given(ops)
def test_random_wallet_life_keeps_the_ledger_consistent(operations):
    entries: list[ledger.Entry] = []
    written: set[tuple[int, Movement]] = set()
    txns: list[dict] = []

    def write(i: int, movement: Movement, amount: int) -> None:
        assert (i, movement) not in written  # what the database's unique key guarantees
        written.add((i, movement))
        entries.extend(ledger.entries(movement, "acct_1", amount))

    def wallet() -> ledger.Balances:
        return ledger.balances((e.book.value, e.amount) for e in entries if e.account_id)

    for op, amount, pick in operations:
        if op == "deposit":
            txns.append({"type": wallets.Type.DEPOSIT, "status": wallets.Status.PENDING, "amount": amount})
        elif op == "withdraw":
            try:
                ledger.check_reserve(wallet().available, amount)
            except InsufficientFunds:
                assert amount > wallet().available
                continue
            txns.append({"type": wallets.Type.WITHDRAWAL, "status": wallets.Status.PENDING, "amount": amount})
            write(len(txns) - 1, Movement.RESERVE, amount)
        elif txns:
            i = pick % len(txns)
            step = wallets.step(txns[i]["type"], txns[i]["status"],
                                wallets.Trigger.SUCCEED if op == "succeed" else wallets.Trigger.FAIL)
            if step is None:
                continue
            txns[i]["status"] = step.status
            if step.movement:
                write(i, step.movement, txns[i]["amount"])
        b = wallet()
        assert b.available >= 0
        assert b.reserved >= 0
        assert sum(e.amount for e in entries) == 0
        completed = sum(t["amount"] if t["type"] is wallets.Type.DEPOSIT else -t["amount"]
                        for t in txns if t["status"] is wallets.Status.COMPLETED)
        pending_out = sum(t["amount"] for t in txns
                          if t["type"] is wallets.Type.WITHDRAWAL and t["status"] is wallets.Status.PENDING)
        assert b.balance == completed
        assert b.reserved == pending_out
