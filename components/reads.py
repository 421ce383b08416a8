"""Merchant reads that belong to no actor: orders, events, the console's
statistics and timelines, reconciliation reports."""

from __future__ import annotations

from storage import events, orders, reconciliation_reports, stats, timeline
from storage.database import Database


async def _overview(conn, merchant_id: str, presence_ttl_s: float, window_s: int, bucket_s: int):
    return (await stats.overview_counts(conn, merchant_id, presence_ttl_s),
            await stats.connector_window(conn, merchant_id, window_s, bucket_s))


class Orders:
    """``/v1/orders``: orders are plain rows; payments settle them (a follower).

    Args:
      db: the open database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, merchant_id: str, amount: int, currency: str, customer_id: str | None,
                     metadata: dict) -> dict:
        return await self._db.transaction(orders.create, merchant_id, amount, currency, customer_id, metadata)

    async def get(self, merchant_id: str, order_id: str) -> dict:
        return await self._db.transaction(orders.get, merchant_id, order_id)

    async def list_page(self, merchant_id: str, **page) -> tuple[list[dict], bool]:
        return await self._db.transaction(orders.list_page, merchant_id, **page)


class Events:
    """``/v1/events``: the merchant's event log.

    Args:
      db: the open database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def list_page(self, merchant_id: str, **page) -> tuple[list[dict], bool]:
        return await self._db.transaction(events.list_page, merchant_id, **page)

    async def get(self, merchant_id: str, event_id: str) -> dict | None:
        return await self._db.transaction(events.get, merchant_id, event_id)


class Console:
    """The console's reads (docs/console.md): statistics, lists, timelines, search.

    Counts and charts read the rollups ``actor:rollups`` keeps (storage/stats.py), so
    they cost the same whatever the number of payments stored.

    Args:
      db: the open database.
      presence_ttl_s: how long a realtime presence counts as online.
    """

    def __init__(self, db: Database, presence_ttl_s: float) -> None:
        self._db = db
        self._presence_ttl_s = presence_ttl_s

    async def payment_series(self, merchant_id: str, window_s: int, bucket_s: int) -> dict:
        return await self._db.run(stats.payment_series, merchant_id, window_s, bucket_s)

    async def overview(self, merchant_id: str, window_s: int, bucket_s: int) -> tuple[dict, list[dict]]:
        """The merchant's counts and each connector's attempts over the window, in one transaction.

        Args:
          window_s, bucket_s: the window as the chart's (:func:`storage.stats.payment_series`), so both
            count the same attempts.
        """
        return await self._db.transaction(_overview, merchant_id, self._presence_ttl_s, window_s, bucket_s)

    async def list_behind(self, merchant_id: str, name: str, **page) -> tuple[list[dict], bool]:
        return await self._db.run(stats.list_behind, merchant_id, name, presence_ttl_s=self._presence_ttl_s, **page)

    async def timeline(self, merchant_id: str, payment_id: str) -> dict:
        return await self._db.transaction(timeline.timeline, merchant_id, payment_id)

    async def search(self, merchant_id: str, term: str, limit: int) -> list[dict]:
        return await self._db.run(timeline.search, merchant_id, term, limit)


class ReconciliationReports:
    """``/v1/reconciliation/reports``: a connector's settlement file checked against our payments.

    Args:
      db: the open database.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, merchant_id: str, connector: str, rows: list[dict]) -> dict:
        return await self._db.transaction(reconciliation_reports.create, merchant_id, connector, rows)
