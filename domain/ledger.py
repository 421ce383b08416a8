"""The double-entry ledger of wallet accounts, sans-IO.

Every movement of money is a pair of entries that sum to zero. Each wallet
has two books: ``available`` (what the customer may withdraw) and
``reserved`` (withdrawals in flight); the outside world is one ``external``
book per currency. A wallet's ``balance`` is the sum of both its books and
its ``available_balance`` the sum of the first: balances are always sums of
entries, never counters edited in place.

    deposit   external  -a   →  available +a     (a deposit's payment succeeded)
    reserve   available -a   →  reserved  +a     (a withdrawal is requested)
    payout    reserved  -a   →  external  +a     (the payout was paid)
    release   reserved  -a   →  available +a     (the payout failed)
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from domain.errors import InsufficientFunds


class Book(str, enum.Enum):
    AVAILABLE = "available"
    RESERVED = "reserved"
    EXTERNAL = "external"


class Movement(str, enum.Enum):
    DEPOSIT = "deposit"
    RESERVE = "reserve"
    PAYOUT = "payout"
    RELEASE = "release"


# movement → (book debited, book credited).
FLOWS: dict[Movement, tuple[Book, Book]] = {
    Movement.DEPOSIT: (Book.EXTERNAL, Book.AVAILABLE),
    Movement.RESERVE: (Book.AVAILABLE, Book.RESERVED),
    Movement.PAYOUT: (Book.RESERVED, Book.EXTERNAL),
    Movement.RELEASE: (Book.RESERVED, Book.AVAILABLE),
}


@dataclass(frozen=True)
class Entry:
    """One side of a movement. ``account_id`` is ``None`` for the external book."""

    movement: Movement
    account_id: str | None
    book: Book
    amount: int


def entries(movement: Movement, account_id: str, amount: int) -> tuple[Entry, Entry]:
    """The two entries of ``movement`` of ``amount`` on a wallet.

    Returns:
      ``(debit, credit)``: the debit is negative, the credit positive, their sum zero.

    Raises:
      ValueError: ``amount`` is not positive (a bug in the caller, never user input).
    """
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"a movement moves a positive amount, not {amount!r}")
    source, target = FLOWS[movement]

    def side(book: Book, signed: int) -> Entry:
        return Entry(movement, None if book is Book.EXTERNAL else account_id, book, signed)

    return side(source, -amount), side(target, amount)


@dataclass(frozen=True)
class Balances:
    available: int
    reserved: int

    @property
    def balance(self) -> int:
        return self.available + self.reserved


def balances(wallet_entries: Iterable[tuple[str, int]]) -> Balances:
    """A wallet's balances from ``(book, amount)`` of its entries."""
    totals = {Book.AVAILABLE: 0, Book.RESERVED: 0}
    for book, amount in wallet_entries:
        totals[Book(book)] += amount
    return Balances(totals[Book.AVAILABLE], totals[Book.RESERVED])


def check_reserve(available: int, amount: int) -> None:
    """A withdrawal may reserve only what is available.

    Raises:
      InsufficientFunds: ``amount`` is more than ``available``.
    """
    if amount > available:
        raise InsufficientFunds(
            f"The account's available balance ({available}) is less than the withdrawal ({amount}).",
            param="amount",
        )
