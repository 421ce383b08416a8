"""Payments and their attempts. Every status write is conditional on the status
the state machine expects, so two processes can never both win a transition."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping

import asyncpg

from domain import render
from domain.errors import InvalidRequest, NotFound, PaycastError, StateError
from domain.events import NewEvent, payment_event
from domain.ids import new_id
from domain.payments import Outcome, OutcomeKind, Status, Trigger, next_status, settle as settle_outcome
from storage import events as event_log
from storage import orders
from storage.pagination import page_rows
from telemetry import metrics


async def fetch_row(conn: asyncpg.Connection, merchant_id: str, payment_id: str, *, lock: bool = False):
    """The payment row, or raise :class:`NotFound` (also for another merchant's payment)."""
    sql = "SELECT * FROM payments WHERE id = $1 AND merchant_id = $2" + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, payment_id, merchant_id)
    if row is None:
        raise NotFound(f"No such payment: '{payment_id}'", param="id")
    return row


async def _attempts(conn: asyncpg.Connection, payment_id: str) -> list:
    return await conn.fetch("SELECT * FROM payment_attempts WHERE payment_id = $1 ORDER BY id", payment_id)


async def _render(conn: asyncpg.Connection, row) -> dict:
    return render.payment(row, await _attempts(conn, row["id"]))


# Objects that follow a payment's status in the same transaction (a wallet
# deposit is credited when its payment succeeds): ``await follower(conn,
# payment row, new status)`` returns the events of what it changed. Modules
# register at import time (they import this one, so it cannot import them).
Follower = Callable[[asyncpg.Connection, asyncpg.Record, str], Awaitable[list[NewEvent]]]
FOLLOWERS: list[Follower] = []


async def _commit_events(conn: asyncpg.Connection, row, status_event: str | None) -> dict:
    """Render the payment, append its event (and its order's), return the snapshot."""
    snapshot = await _render(conn, row)
    pending: list[NewEvent] = []
    if status_event:
        pending.append(payment_event(status_event, snapshot))
        if row["order_id"] and status_event in ("succeeded", "failed"):
            order_ev = await orders.follow_payment(conn, row["merchant_id"], row["order_id"], status_event)
            if order_ev:
                pending.append(order_ev)
        for follower in FOLLOWERS:
            pending.extend(await follower(conn, row, status_event))
    await event_log.append_all(conn, row["merchant_id"], pending)
    return snapshot


async def _check_order(conn: asyncpg.Connection, merchant_id: str, spec: dict, customer_id: str | None) -> str | None:
    """Check a payment against its order; returns the customer id to use.

    Raises:
      NotFound: ``order_id`` is not one of the merchant's orders.
      InvalidRequest: amount or currency differ from the order's.
    """
    order = await orders.fetch_row(conn, merchant_id, spec["order_id"])
    if order["amount"] != spec["amount"]:
        raise InvalidRequest("The amount must equal the order's amount.", param="amount")
    if order["currency"] != spec["currency"]:
        raise InvalidRequest("The currency must equal the order's currency.", param="currency")
    return customer_id or order["customer_id"]


async def create(conn: asyncpg.Connection, merchant_id: str, spec: dict) -> dict:
    """Insert a payment in ``requires_confirmation`` and its ``payment.created`` event.

    Args:
      spec: validated fields: amount, currency, order_id, customer_id,
        payment_method (stored form), capture_method, connector, metadata.

    Raises:
      NotFound: ``order_id`` is not one of the merchant's orders.
      InvalidRequest: amount or currency differ from the order's.
    """
    customer_id = spec.get("customer_id")
    if spec.get("order_id"):
        customer_id = await _check_order(conn, merchant_id, spec, customer_id)
    row = await conn.fetchrow(
        "INSERT INTO payments (id, merchant_id, order_id, customer_id, amount, currency, status,"
        " capture_method, payment_method, pinned_connector, metadata)"
        " VALUES ($1, $2, $3, $4, $5, $6, 'requires_confirmation', $7, $8, $9, $10) RETURNING *",
        new_id("pay"), merchant_id, spec.get("order_id"), customer_id, spec["amount"], spec["currency"],
        spec["capture_method"], spec["payment_method"], spec.get("connector"), spec.get("metadata") or {},
    )
    snapshot = render.payment(row, [])
    await event_log.append(conn, merchant_id, payment_event("created", snapshot))
    metrics.transition("payment", row["id"], None, "requires_confirmation", amount=row["amount"],
                       currency=row["currency"])
    return snapshot


@dataclasses.dataclass(frozen=True)
class Begun:
    """A started attempt and what the actor needs to call the connector."""

    attempt_id: str
    connector: str
    candidates: tuple[str, ...]
    payment: dict  # the locked row as it was when the attempt started


# (payment row, the merchant's stored routing config) -> candidate connectors.
Route = Callable[[Mapping, dict | None], list[str]]


async def begin_attempt(conn: asyncpg.Connection, merchant_id: str, payment_id: str, deadline_s: float,
                        *, route: Route | None = None, connector: str | None = None,
                        first: bool = True) -> Begun:
    """Start a connector attempt: the payment goes (or stays) ``processing``.

    The first attempt moves ``requires_confirmation`` → ``processing``; a fallback
    attempt (``first=False``) requires the payment still ``processing``. No event
    is written here: ``processing`` becomes visible as an event only if the
    confirm ends there (see :func:`settle`).

    Args:
      route: pure function from the payment row to candidate connectors (used
        when ``connector`` is not given).

    Raises:
      NotFound, StateError.
    """
    row = await fetch_row(conn, merchant_id, payment_id, lock=True)
    if first:
        next_status(row["status"], Trigger.CONFIRM)
    elif row["status"] != Status.PROCESSING.value:
        raise StateError(f"The payment is no longer processing (status {row['status']}).")
    if connector:
        candidates: tuple[str, ...] = (connector,)
    else:
        routing = await conn.fetchval("SELECT routing FROM merchants WHERE id = $1", merchant_id)
        candidates = tuple(route(row, routing) if route else ())
    if not candidates:
        raise StateError("No connector can take this payment.", code="no_connector")
    await conn.execute(
        "UPDATE payments SET status = 'processing', connector = $2, updated_at = now(),"
        " processing_deadline = now() + make_interval(secs => $3) WHERE id = $1",
        payment_id, candidates[0], deadline_s,
    )
    if first:
        metrics.transition("payment", payment_id, row["status"], "processing", connector=candidates[0])
    attempt_id = new_id("att")
    await conn.execute(
        "INSERT INTO payment_attempts (id, payment_id, merchant_id, connector, status)"
        " VALUES ($1, $2, $3, $4, 'started')",
        attempt_id, payment_id, merchant_id, candidates[0],
    )
    return Begun(attempt_id, candidates[0], candidates, dict(row))


async def create_and_begin(conn: asyncpg.Connection, merchant_id: str, spec: dict, deadline_s: float,
                           route: Route) -> Begun:
    """Create a payment and start its first attempt in one transaction (``confirm: true``)."""
    snapshot = await create(conn, merchant_id, spec)
    return await begin_attempt(conn, merchant_id, snapshot["id"], deadline_s, route=route)


async def settle(conn: asyncpg.Connection, merchant_id: str, payment_id: str, attempt_id: str,
                 outcome: Outcome, *, final: bool = True, latency_ms: float | None = None) -> dict:
    """Record a connector ``outcome`` for an attempt and move the payment.

    A payment that is no longer ``processing`` (a late or duplicate answer) is
    left as it is: a terminal status never changes.

    Args:
      final: False when the confirm will fall back to another connector, so an
        ``unknown``/failed attempt must not move the payment yet.
      latency_ms: how long the connector call took (None when no call of ours
        settled it: a webhook, reconciliation).

    Returns:
      The payment's API form after the change.
    """
    row = await fetch_row(conn, merchant_id, payment_id, lock=True)
    result = settle_outcome(row["amount"], outcome)
    await conn.execute(
        "UPDATE payment_attempts SET status = $2, connector_txn_id = COALESCE($3, connector_txn_id),"
        " error_code = $4, latency_ms = COALESCE($5, latency_ms), updated_at = now()"
        " WHERE id = $1 AND status IN ('started', 'unknown')",
        attempt_id, "failed" if not final and outcome.kind is OutcomeKind.UNKNOWN else result.attempt_status,
        outcome.connector_txn_id, outcome.error_code, latency_ms,
    )
    if row["status"] != Status.PROCESSING.value or not final:
        return await _render(conn, row)
    row = await conn.fetchrow(
        "UPDATE payments SET status = $2, amount_received = $3, amount_capturable = $4, last_error = $5,"
        " processing_deadline = CASE WHEN $2 = 'processing' THEN processing_deadline END,"
        " updated_at = now() WHERE id = $1 AND status = 'processing' RETURNING *",
        payment_id, result.status.value, result.amount_received, result.amount_capturable, result.last_error,
    )
    metrics.transition("payment", payment_id, "processing", result.status.value, connector=row["connector"],
                       outcome=outcome.kind.value, error=outcome.error_code)
    return await _commit_events(conn, row, result.status.value)


async def capture(conn: asyncpg.Connection, merchant_id: str, payment_id: str, amount: int) -> dict:
    """``requires_capture`` → ``succeeded`` for ``amount``; the rest is released."""
    row = await conn.fetchrow(
        "UPDATE payments SET status = 'succeeded', amount_received = $3, amount_capturable = 0,"
        " updated_at = now() WHERE id = $1 AND merchant_id = $2 AND status = 'requires_capture'"
        " AND amount_capturable >= $3 RETURNING *",
        payment_id, merchant_id, amount,
    )
    if row is None:
        current = await fetch_row(conn, merchant_id, payment_id)
        next_status(current["status"], Trigger.CAPTURE)  # raises the precise StateError
        raise StateError("The payment changed while capturing; retry.")
    await conn.execute(
        "UPDATE payment_attempts SET status = 'succeeded', updated_at = now()"
        " WHERE payment_id = $1 AND status = 'authorized'", payment_id,
    )
    metrics.transition("payment", payment_id, "requires_capture", "succeeded", amount=amount)
    return await _commit_events(conn, row, "succeeded")


async def cancel(conn: asyncpg.Connection, merchant_id: str, payment_id: str) -> dict:
    """``requires_confirmation``/``requires_capture`` → ``canceled``; an authorisation is voided."""
    current = await fetch_row(conn, merchant_id, payment_id, lock=True)
    next_status(current["status"], Trigger.CANCEL)
    row = await conn.fetchrow(
        "UPDATE payments SET status = 'canceled', amount_capturable = 0, updated_at = now()"
        " WHERE id = $1 AND status = $2 RETURNING *", payment_id, current["status"],
    )
    await conn.execute(
        "UPDATE payment_attempts SET status = 'failed', error_code = 'authorization_voided', updated_at = now()"
        " WHERE payment_id = $1 AND status = 'authorized'", payment_id,
    )
    metrics.transition("payment", payment_id, current["status"], "canceled")
    return await _commit_events(conn, row, "canceled")


async def get(conn: asyncpg.Connection, merchant_id: str, payment_id: str) -> dict:
    return await _render(conn, await fetch_row(conn, merchant_id, payment_id))


async def list_page(conn: asyncpg.Connection, merchant_id: str, *, limit: int, starting_after: str | None,
                    filters: dict[str, object]) -> tuple[list[dict], bool]:
    rows, more = await page_rows(conn, "payments", merchant_id, limit=limit,
                                 starting_after=starting_after, filters=filters)
    by_payment: dict[str, list] = {r["id"]: [] for r in rows}
    if rows:
        for a in await conn.fetch(
            "SELECT * FROM payment_attempts WHERE payment_id = ANY($1) ORDER BY id", list(by_payment)
        ):
            by_payment[a["payment_id"]].append(a)
    return [render.payment(r, by_payment[r["id"]]) for r in rows], more



async def authorized_txn(conn: asyncpg.Connection, payment_id: str) -> str | None:
    """The connector transaction id of the payment's authorised attempt."""
    return await conn.fetchval(
        "SELECT connector_txn_id FROM payment_attempts WHERE payment_id = $1 AND status = 'authorized'", payment_id
    )


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    """An attempt that already ran against an in-process connector."""

    id: str
    connector: str
    status: str
    connector_txn_id: str | None
    error_code: str | None
    created_at: dt.datetime
    latency_ms: float | None = None  # the connector call's duration


@dataclasses.dataclass(frozen=True)
class Confirmed:
    """A payment whose attempts already ran, ready to be written."""

    merchant_id: str
    spec: dict
    payment_id: str
    attempts: list[AttemptRecord]
    outcome: Outcome
    deadline_s: float
    now: dt.datetime
    traceparent: str | None = None  # the trace of the request that made it


async def insert_confirmed(conn: asyncpg.Connection, item: Confirmed) -> dict:
    """Create a payment whose attempts already ran, with all its events, in one transaction.

    Used for ``confirm: true`` with in-process connectors: there is nothing
    outside this process that could have moved money if we crash before the
    commit, so the intent-first write of :func:`begin_attempt` buys nothing
    and costs a crossing (DESIGN.md: one request, one crossing).

    Raises:
      NotFound, InvalidRequest: as :func:`create` (order checks).
    """
    snapshot, pending = await _write_confirmed(conn, item)
    await event_log.append_all(conn, item.merchant_id, pending)
    return snapshot


async def insert_confirmed_batch(conn: asyncpg.Connection, items: list[Confirmed]) -> list[dict | PaycastError]:
    """Group commit of :func:`insert_confirmed`: many payments, one transaction.

    Rows are written first and the events last, one append per merchant, so a
    merchant's seq row is locked once per batch and only for the end of it.
    An item that fails a check (its order) is rolled back alone, through its
    savepoint, and answered with its error.

    Returns:
      Per item, its snapshot or its :class:`PaycastError`.
    """
    results: list[dict | PaycastError] = []
    by_merchant: dict[str, list[NewEvent]] = {}
    for item in items:
        try:
            if item.spec.get("order_id"):
                async with conn.transaction():  # a savepoint: an order check may fail
                    snapshot, pending = await _write_confirmed(conn, item)
            else:
                snapshot, pending = await _write_confirmed(conn, item)
        except PaycastError as exc:
            results.append(exc)
            continue
        if item.traceparent:  # each payment's events join its own request's trace
            pending = [dataclasses.replace(e, traceparent=item.traceparent) for e in pending]
        results.append(snapshot)
        by_merchant.setdefault(item.merchant_id, []).extend(pending)
    for merchant_id, pending in by_merchant.items():
        await event_log.append_all(conn, merchant_id, pending)
    return results


async def _write_confirmed(conn: asyncpg.Connection, item: Confirmed) -> tuple[dict, list[NewEvent]]:
    """Insert the payment and its attempts (and move its order); return the snapshot and events to append."""
    merchant_id, spec, payment_id = item.merchant_id, item.spec, item.payment_id
    attempts, outcome, deadline_s, now = item.attempts, item.outcome, item.deadline_s, item.now
    customer_id = spec.get("customer_id")
    if spec.get("order_id"):
        customer_id = await _check_order(conn, merchant_id, spec, customer_id)
    result = settle_outcome(spec["amount"], outcome)
    processing = result.status is Status.PROCESSING
    row = {
        "id": payment_id, "merchant_id": merchant_id, "order_id": spec.get("order_id"), "customer_id": customer_id,
        "amount": spec["amount"], "currency": spec["currency"], "status": result.status.value,
        "capture_method": spec["capture_method"], "payment_method": spec["payment_method"],
        "connector": attempts[-1].connector, "amount_capturable": result.amount_capturable,
        "amount_received": result.amount_received, "amount_refunded": 0, "last_error": result.last_error,
        "review_required": False, "metadata": spec.get("metadata") or {}, "created_at": now, "updated_at": now,
    }
    await conn.execute(
        "INSERT INTO payments (id, merchant_id, order_id, customer_id, amount, currency, status, capture_method,"
        " payment_method, connector, pinned_connector, amount_capturable, amount_received, last_error, metadata,"
        " processing_deadline, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
        " CASE WHEN $16 THEN $17::timestamptz + make_interval(secs => $18) END, $17, $17)",
        payment_id, merchant_id, row["order_id"], customer_id, row["amount"], row["currency"], row["status"],
        row["capture_method"], row["payment_method"], row["connector"], spec.get("connector"),
        row["amount_capturable"], row["amount_received"], row["last_error"], row["metadata"],
        processing, now, deadline_s,
    )
    attempt_rows = [dataclasses.asdict(a) for a in attempts]
    attempt_rows[-1]["status"] = result.attempt_status
    attempt_rows[-1]["error_code"] = outcome.error_code
    await conn.execute(
        "INSERT INTO payment_attempts (id, payment_id, merchant_id, connector, status, connector_txn_id,"
        " error_code, created_at, updated_at, latency_ms)"
        " SELECT a.id, $1, $2, a.connector, a.status, a.txn, a.code, a.created, a.created, a.latency"
        " FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[],"
        " $9::float8[]) AS a(id, connector, status, txn, code, created, latency)",
        payment_id, merchant_id, [a["id"] for a in attempt_rows], [a["connector"] for a in attempt_rows],
        [a["status"] for a in attempt_rows], [a["connector_txn_id"] for a in attempt_rows],
        [a["error_code"] for a in attempt_rows], [a["created_at"] for a in attempt_rows],
        [a["latency_ms"] for a in attempt_rows],
    )
    created = render.payment({**row, "status": "requires_confirmation", "amount_capturable": 0,
                              "amount_received": 0, "last_error": None, "connector": None}, [])
    snapshot = render.payment(row, attempt_rows)
    pending = [payment_event("created", created), payment_event(result.status.value, snapshot)]
    if row["order_id"] and result.status.value in ("succeeded", "failed"):
        order_ev = await orders.follow_payment(conn, merchant_id, row["order_id"], result.status.value)
        if order_ev:
            pending.append(order_ev)
    metrics.transition("payment", payment_id, "requires_confirmation", result.status.value,
                       connector=row["connector"], outcome=outcome.kind.value, error=outcome.error_code)
    return snapshot, pending
