"""Wallet accounts: deposits and withdrawals through one actor per account."""

from __future__ import annotations

import trio

from actors.account import AccountActor
from actors.runtime import Registry
from components.payments import Payments
from config import Settings
from storage import accounts
from storage.database import Database


class Accounts:
    """The account surface: account actors and the reads of accounts and their transactions.

    Args:
      settings: actor sizes and the ask timeout.
      db: the open database.
      payments: a deposit funds a payment (told to its actor); payouts use its
        routing and connector caller.
    """

    def __init__(self, settings: Settings, db: Database, payments: Payments) -> None:
        self._settings = settings
        self._db = db
        self.registry: Registry[str] | None = None
        self._actor = AccountActor(payments)

    def start(self, nursery: trio.Nursery) -> None:
        """Start the account actors' registry in ``nursery``."""
        self.registry = Registry(nursery, "account", self._actor.handle,
                                 idle_s=self._settings.actor_idle_s, inbox_size=self._settings.actor_inbox_size)

    async def ask(self, account_id: str, message: object) -> dict:
        """Ask the account's actor (``Deposit`` / ``Withdraw``) and wait for its answer."""
        assert self.registry is not None
        return await self.registry.ask(account_id, message, self._settings.ask_timeout_s)

    async def create(self, merchant_id: str, customer_id: str, currency: str, metadata: dict) -> dict:
        return await self._db.transaction(accounts.create, merchant_id, customer_id, currency, metadata)

    async def get(self, merchant_id: str, account_id: str) -> dict:
        return await self._db.transaction(accounts.get, merchant_id, account_id)

    async def check_exists(self, merchant_id: str, account_id: str) -> None:
        """Raise not-found unless the merchant owns ``account_id``."""
        await self._db.transaction(accounts.fetch_row, merchant_id, account_id)

    async def list_page(self, merchant_id: str, **page) -> tuple[list[dict], bool]:
        return await self._db.transaction(accounts.list_page, merchant_id, **page)

    async def list_transactions(self, merchant_id: str, account_id: str, **page) -> tuple[list[dict], bool]:
        return await self._db.transaction(accounts.list_transactions, merchant_id, account_id, **page)

    async def get_transaction(self, merchant_id: str, transaction_id: str) -> dict:
        return await self._db.transaction(accounts.get_transaction, merchant_id, transaction_id)
