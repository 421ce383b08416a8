"""The ONE place where tests call storage units of work directly.

tests/integration/test_storage_units.py speaks to storage only through
:class:`StorageAPI`, in domain terms (create a payment, start an attempt,
capture, refund, reserve …). When a storage function is rewritten (new
signature, several statements folded into one), only the matching method here
changes; the guard tests stay as they are. Each method is one unit of work run
by the real runner (:class:`storage.database.Database`, its loop thread and
pool) against the real PostgreSQL, exactly as the actors run it.

Errors are the domain's (:mod:`domain.errors`); results are the API forms
(dicts) the storage functions return.
"""

from __future__ import annotations

import hashlib

from components import register_followers_and_projections
from domain.ids import new_id
from domain.payments import Outcome, OutcomeKind, Trigger
from domain.refunds import Trigger as RefundTrigger
from domain.submission import Submission
from domain.webhooks import GatewayEvent
from storage import (accounts, connector_accounts, events, idempotency, inbox, merchants, payments, reconcile, refunds,
                     webhook_deliveries, webhook_endpoints)
from storage.database import Database

CARD = {"type": "card", "card": {"first6": "424242", "last4": "4242"}}
CONNECTOR = "mockstripe"


def _route(*_args) -> list[str]:
    return [CONNECTOR]


class StorageAPI:
    """Storage units of work over one open :class:`Database`.

    Args:
      db: an opened database whose schema is migrated.
      deadline_s: processing deadline given to attempts.
    """

    def __init__(self, db: Database, deadline_s: float = 60.0) -> None:
        self.db = db
        self.deadline_s = deadline_s
        # What commits with a change (orders and deposits following their payment, the
        # realtime log) is registered by the running system; do as it does.
        register_followers_and_projections(db)

    # ---- merchants
    async def create_merchant(self, name: str = "storage test") -> str:
        merchant, _api_key = await self.db.transaction(merchants.create, name)
        return merchant["id"]

    # ---- payments
    async def create_payment(self, merchant_id: str, amount: int = 1000, *, capture_method: str = "automatic",
                             customer_id: str | None = None) -> dict:
        spec = {"amount": amount, "currency": "INR", "payment_method": CARD, "capture_method": capture_method,
                "customer_id": customer_id, "metadata": {}}
        return await self.db.transaction(payments.create, merchant_id, spec)

    async def payment(self, merchant_id: str, payment_id: str) -> dict:
        return await self.db.transaction(payments.get, merchant_id, payment_id)

    async def begin_attempt(self, merchant_id: str, payment_id: str, *, deadline_s: float | None = None,
                            connector: str = CONNECTOR, action_deadline_s: float = 3600.0) -> str:
        """requires_confirmation → processing with a ``started`` attempt; returns the attempt id.

        Args:
          deadline_s: seconds until reconciliation may look at it (default: the API's).
          connector: the attempt's connector (a real one goes to the merchant's active account).
          action_deadline_s: how long it may then wait in ``requires_action``.
        """
        begun = await self.db.transaction(payments.begin_attempt, merchant_id, payment_id,
                                          self.deadline_s if deadline_s is None else deadline_s,
                                          connector=connector, action_deadline_s=action_deadline_s)
        return begun.attempt_id

    async def answer(self, merchant_id: str, payment_id: str, attempt_id: str, outcome: Outcome, *,
                     cancellation_reason: str | None = None) -> dict:
        """Record a connector's full answer (next action, card details …) for an attempt; the payment."""
        return await self.db.transaction(payments.settle, merchant_id, payment_id, attempt_id, outcome,
                                         cancellation_reason=cancellation_reason)

    async def add_connector_account(self, merchant_id: str, connector: str, account_id: str) -> None:
        """An active connector account row (its secrets are not what these tests are about)."""
        await self.db.transaction(connector_accounts.insert, {
            "id": account_id, "merchant_id": merchant_id, "connector": connector, "label": None,
            "livemode": False, "credentials_sealed": "unused", "webhook_secret_sealed": "unused",
            "credentials_mask": {}})

    async def settle(self, merchant_id: str, payment_id: str, attempt_id: str, kind: OutcomeKind,
                     txn: str | None = None) -> dict:
        """Record the connector's answer for an attempt; returns the payment."""
        return await self.db.transaction(payments.settle, merchant_id, payment_id, attempt_id,
                                         Outcome(kind, txn, "card_declined" if kind is OutcomeKind.DECLINED
                                                 else None))

    async def capture(self, merchant_id: str, payment_id: str, amount: int) -> dict:
        # Read, then one guarded statement (as the payment actor does around the connector call).
        loaded = await self.db.transaction(payments.load, merchant_id, payment_id)
        return await self.db.transaction(payments.capture, loaded, amount)

    async def cancel(self, merchant_id: str, payment_id: str, reason: str | None = None) -> dict:
        loaded = await self.db.transaction(payments.load, merchant_id, payment_id)
        return await self.db.transaction(payments.cancel, loaded, reason)

    async def claim_operation(self, merchant_id: str, payment_id: str, trigger: str,
                              hold_s: float = 30.0) -> payments.Loaded:
        """Reserve an authorised payment for a capture or void before the connector call; the payment
        as the claimant holds it (for :meth:`capture_claimed`, :meth:`cancel_claimed`)."""
        loaded = await self.db.transaction(payments.load, merchant_id, payment_id)
        return await self.db.transaction(payments.claim_operation, loaded, Trigger(trigger), hold_s)

    async def capture_claimed(self, claimed: payments.Loaded, amount: int) -> dict:
        """The capture a claimant writes after its connector call."""
        return await self.db.transaction(payments.capture, claimed, amount)

    async def cancel_claimed(self, claimed: payments.Loaded) -> dict:
        """The cancel a claimant writes after its connector call."""
        return await self.db.transaction(payments.cancel, claimed)

    async def release_claimed(self, claimed: payments.Loaded, trigger: str) -> None:
        await self.db.transaction(payments.release_operation, claimed, Trigger(trigger))

    async def release_operation(self, merchant_id: str, payment_id: str, trigger: str) -> None:
        loaded = await self.db.transaction(payments.load, merchant_id, payment_id)
        await self.db.transaction(payments.release_operation, loaded, Trigger(trigger))

    # ---- reconciliation of payments stuck in processing
    async def lease_overdue(self, limit: int, lease_s: float = 30.0) -> list[str]:
        """Lease processing payments past their deadline; their ids."""
        return [r["id"] for r in await self.db.transaction(reconcile.claim_due, limit, lease_s)]

    async def lease_abandoned(self, limit: int, lease_s: float = 30.0) -> list[str]:
        """Lease payments left in requires_action past their action deadline; their ids."""
        return [r["id"] for r in await self.db.transaction(reconcile.claim_abandoned, limit, lease_s)]

    async def open_attempt(self, payment_id: str, in_flight_s: float) -> dict | None:
        """The attempt reconciliation would ask about, with its ``in_flight`` flag."""
        row = await self.db.transaction(reconcile.open_attempt, payment_id, in_flight_s)
        return dict(row) if row else None

    async def record_inconclusive_check(self, payment_id: str, max_checks: int) -> dict:
        """Count a check that learnt nothing; ``{"checks", "review_required"}``."""
        return await self.db.transaction(reconcile.record_check, payment_id, max_checks, 0.0)

    # ---- refunds
    async def begin_refund(self, merchant_id: str, payment_id: str, amount: int | None) -> dict:
        """Accept a refund (counted against the payment, ``pending``); returns the refund row."""
        begun = await self.db.transaction(refunds.begin, merchant_id, payment_id, amount, None, {})
        return begun["refund"]

    async def settle_refund(self, refund_id: str, succeeded: bool) -> dict | None:
        trigger = RefundTrigger.SUCCEED if succeeded else RefundTrigger.FAIL
        return await self.db.transaction(refunds.settle, refund_id, trigger, reference=f"re_sim_{refund_id}")

    # ---- wallets
    async def create_account(self, merchant_id: str, customer_id: str = "cus_storage") -> str:
        account = await self.db.transaction(accounts.create, merchant_id, customer_id, "INR", {})
        return account["id"]

    async def deposit(self, merchant_id: str, account_id: str, amount: int, *, succeed: bool = True) -> dict:
        """A deposit through its payment, settled by the connector's answer; returns the transaction."""
        txn, begun = await self.db.transaction(accounts.begin_deposit, merchant_id, account_id, amount, CARD,
                                               self.deadline_s, _route)
        kind = OutcomeKind.SUCCEEDED if succeed else OutcomeKind.DECLINED
        await self.settle(merchant_id, begun.payment["id"], begun.attempt_id, kind, f"pi_{txn['id']}s")
        return await self.db.transaction(accounts.get_transaction, merchant_id, txn["id"])

    async def begin_withdrawal(self, merchant_id: str, account_id: str, amount: int) -> dict:
        return await self.db.transaction(accounts.begin_withdrawal, merchant_id, account_id, amount, _route)

    async def record_payout(self, transaction_id: str, status: str) -> dict:
        return await self.db.transaction(accounts.record_payout, transaction_id,
                                         Submission(status, f"po_sim_{transaction_id}"))

    async def account(self, merchant_id: str, account_id: str) -> dict:
        return await self.db.transaction(accounts.get, merchant_id, account_id)

    # ---- idempotency
    async def claim_key(self, merchant_id: str, key: str, body: str) -> idempotency.Stored | None:
        return await self.db.transaction(idempotency.claim, merchant_id, key, hashlib.sha256(body.encode()).hexdigest())

    async def complete_key(self, merchant_id: str, key: str, status: int, body: str) -> None:
        await self.db.transaction(idempotency.complete, merchant_id, key, status, body)

    # ---- the incoming webhook inbox
    async def store_webhooks(self, events: list[tuple[str, str, str, str | None]]) -> set[str]:
        """Store ``(event id, kind, connector txn id, payment id)`` webhooks of mockstripe in one
        unit of work; returns the ids of the rows that were new (duplicates are skipped)."""
        items = [(GatewayEvent(CONNECTOR, event_id, kind, txn, payment_id, None, None, None, 0), "{}")
                 for event_id, kind, txn, payment_id in events]
        return {r["id"] for r in await self.db.transaction(inbox.insert_many, items)}

    async def store_and_claim_webhooks(self, events: list[tuple[str, str, str, str | None]],
                                       lease_s: float = 30.0) -> list[tuple[str, inbox.Seen | None]]:
        """As :meth:`store_webhooks`, the new rows claimed by the insert (as the writer does when it
        hands rows to its processor); per new row, its id and what the insert read for its apply."""
        items = [(GatewayEvent(CONNECTOR, event_id, kind, txn, payment_id, None, None, None, 0), "{}")
                 for event_id, kind, txn, payment_id in events]
        rows = await self.db.transaction(inbox.insert_many, items, lease_s)
        return [(r["id"], r.get("seen")) for r in rows]

    async def store_event(self, event: GatewayEvent) -> str:
        """Store one gateway event as a webhook endpoint does (real connectors: with its account); its row id."""
        (row,) = await self.db.transaction(inbox.insert_many, [(event, "{}")])
        return row["id"]

    async def inbox_item(self, inbox_id: str) -> dict:
        return await self.db.run(inbox.get_item, inbox_id)

    async def seen_for_apply(self, inbox_id: str) -> inbox.Seen | str | None:
        """What an apply of the row reads first (:class:`storage.inbox.Seen`, or why there is none)."""
        return await self.db.run(inbox._read_for_apply, inbox_id, 30.0)

    async def claim_webhooks(self, limit: int, lease_s: float = 30.0) -> list[str]:
        """Lease unprocessed inbox rows; their ids."""
        return [inbox_id for inbox_id, _ in await self.claim_webhooks_seen(limit, lease_s)]

    async def claim_webhooks_seen(self, limit: int, lease_s: float = 30.0) -> list[tuple[str, inbox.Seen | None]]:
        """Lease unprocessed inbox rows; per row, its id and what the claim read for its apply."""
        return [(r["id"], r.get("seen")) for r in await self.db.transaction(inbox.claim, limit, lease_s)]

    async def claim_webhooks_held(self, limit: int, lease_s: float = 30.0) -> dict[str, tuple[int, inbox.Seen | None]]:
        """Lease unprocessed inbox rows; per row id, the claim (its ``tries`` after the claim) and what
        the claim read for its apply."""
        return {r["id"]: (r["tries"], r.get("seen")) for r in await self.db.transaction(inbox.claim, limit, lease_s)}

    async def apply_webhook(self, inbox_id: str, seen: inbox.Seen | None = None, claim: int | None = None) -> str:
        """Apply one stored webhook (with what its insert read, and the caller's claim, if given);
        its resulting status."""
        return await self.db.transaction(inbox.apply, inbox_id, 30.0, seen, claim)

    async def fail_webhook(self, inbox_id: str, claim: int | None) -> str:
        """Record a failed apply of a claimed row (retry schedule 1,1,2)."""
        return await self.db.transaction(inbox.fail, inbox_id, "failed in the test", [1, 1, 2], claim)

    async def ignore_late_webhooks(self, held: dict[str, int]) -> set[str]:
        """Set claimed late outcomes aside in bulk; ``held``: row id → the caller's claim."""
        return await self.db.transaction(inbox.ignore_late, list(held), list(held.values()))

    async def inbox_row(self, inbox_id: str) -> dict:
        return dict(await self.db.run(lambda conn: conn.fetchrow("SELECT * FROM webhook_inbox WHERE id = $1",
                                                                 inbox_id)))

    # ---- outgoing webhook deliveries
    async def create_endpoint(self, merchant_id: str) -> str:
        """An enabled endpoint of the merchant for every event type."""
        # The secret column holds a sealed value; no delivery is signed here, so any opaque string does.
        endpoint = await self.db.transaction(webhook_endpoints.create, merchant_id, new_id("we"),
                                             "https://example.test/hooks", ["*"], None, "sealed:unused")
        return endpoint["id"]

    async def claim_deliveries(self, limit: int = 100) -> dict[str, str]:
        """Lease due deliveries (as a dispatcher does); per delivery id, its claim token."""
        return {d["id"]: d["token"] for d in await self.db.transaction(webhook_deliveries.claim, limit, 4, [])}

    async def lapse_delivery_leases(self) -> None:
        """Every delivery lease runs out now (they last minutes: a test cannot wait for one)."""
        await self.db.run(lambda conn: conn.execute(
            "UPDATE webhook_deliveries SET claimed_until = now() - interval '1 second' WHERE claimed_until IS NOT NULL"))

    async def record_delivery_attempt(self, delivery_id: str, token: str, status_code: int) -> str:
        return await self.db.transaction(webhook_deliveries.record_attempt, delivery_id, token, status_code, 5, None,
                                         [1, 1, 2])

    async def delivery(self, delivery_id: str) -> dict:
        return dict(await self.db.run(lambda conn: conn.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1",
                                                                 delivery_id)))

    # ---- the event log
    async def events(self, merchant_id: str, object_id: str | None = None) -> list[dict]:
        """The merchant's events, oldest first."""
        rows, _ = await self.db.transaction(events.list_page, merchant_id, limit=100, starting_after=None,
                                            type_=None, object_id=object_id, after_seq=0)
        return rows
