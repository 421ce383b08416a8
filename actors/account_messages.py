"""The messages of the account actor family (:mod:`actors.account`): a wallet's
deposits and withdrawals."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Deposit:
    merchant_id: str
    amount: int
    payment_method: dict  # stored form


@dataclass(frozen=True)
class Withdraw:
    merchant_id: str
    amount: int

