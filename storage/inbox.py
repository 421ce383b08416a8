"""The gateway webhook inbox: stored before the 200, applied exactly once.

Exactly once comes from the apply transaction itself: it locks the inbox row,
returns early if the row is already processed, and marks it processed in the
same transaction that moves the payment. Claims (leases taken with
``FOR UPDATE SKIP LOCKED``) only spread the work across processes.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from domain import render
from domain.errors import NotYetApplicable, StateError
from domain.ids import new_id
from domain.payments import Outcome, OutcomeKind
from domain.webhooks import GatewayEvent
from storage import accounts, disputes, payments, refunds
from storage.database import single_unit

DEFERRED = "deferred"

# A webhook can overtake the commit of the payment it is about (the gateway
# answers fast, our transaction is still committing). Such a row is retried
# for a grace period (setting ``webhook_unmatched_grace_s``) before it is kept
# aside as ``unmatched`` for review.
RETRY = "retry"

# The row was claimed again since the caller's claim (its lease lapsed while the
# caller was stopped, and another process took it): the caller must leave it
# alone. A claim is identified by the row's ``tries`` after it (every claim
# counts one), which the guarded statements compare: the fencing token.
TAKEN_OVER = "taken_over"

# Rows of the CTE ``taken`` with what apply() decides a payment outcome on (see
# Seen), read when {claimed} holds: the row's own columns are prefixed, as the
# payment's are not; {extra} adds row columns. One join for the apply's own read,
# the insert and the claim. ``inbox_late`` (every connector): a payment outcome whose
# payment takes no outcome any more, for ignore_late (which decides under its guards).
_TAKEN_WITH_SEEN = (
    " SELECT t.id AS inbox_id, t.connector AS inbox_connector, t.kind AS inbox_kind,"
    " t.connector_txn_id AS inbox_connector_txn_id, t.payment_id AS inbox_payment_id, t.tries AS inbox_tries,"
    " t.received_at AS inbox_received_at, t.traceparent AS inbox_traceparent,"
    " t.account_id AS inbox_account_id{extra},"
    " ({claimed} AND t.kind LIKE 'payment.%' AND EXISTS (SELECT 1 FROM payments lp WHERE lp.id = t.payment_id"
    "   AND lp.status NOT IN ('processing', 'requires_action'))) AS inbox_late,"
    " ma.id AS seen_matched_attempt, p.*,"
    " ARRAY(SELECT a FROM payment_attempts a WHERE a.payment_id = p.id ORDER BY a.id) AS seen_attempts"
    " FROM taken t"
    # The hot path is the simulators' (no account): a real connector's event
    # is checked against its account under row locks (apply_locked).
    " LEFT JOIN payment_attempts ma ON {claimed} AND t.kind IN ('payment.succeeded', 'payment.failed')"
    "   AND t.account_id IS NULL AND ma.connector = t.connector AND ma.connector_txn_id = t.connector_txn_id"
    " LEFT JOIN payments p ON {claimed} AND t.kind IN ('payment.succeeded', 'payment.failed')"
    "   AND t.account_id IS NULL AND p.id = COALESCE(ma.payment_id, t.payment_id)"
)
# New rows only: the connector's event id goes through the dedup key table
# first (webhook_inbox is partitioned by time, so it cannot hold a unique index
# on (connector, event_id); see migration 0015), and only rows whose key was
# new are stored, claimed for $10 seconds when $10 is not NULL. One statement.
INSERT_SQL = (
    "WITH incoming AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
    " $7::text[], $8::text[], $9::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],"
    " $16::bigint[])"
    " AS u(id, connector, event_id, kind, connector_txn_id, payment_id, object_id, raw_body, traceparent,"
    " account_id, payment_txn_id, error_code, message, method_details, amount)),"
    " fresh AS (INSERT INTO webhook_inbox_keys (connector, event_id, inbox_id)"
    " SELECT connector, event_id, id FROM incoming ON CONFLICT (connector, event_id) DO NOTHING RETURNING inbox_id),"
    " taken AS (INSERT INTO webhook_inbox (id, connector, event_id, kind, connector_txn_id, payment_id, object_id,"
    " raw_body, traceparent, account_id, payment_txn_id, error_code, message, method_details, amount,"
    " claimed_until, tries)"
    " SELECT i.id, i.connector, i.event_id, i.kind, i.connector_txn_id, i.payment_id, i.object_id, i.raw_body,"
    " i.traceparent, i.account_id, i.payment_txn_id, i.error_code, i.message, i.method_details::jsonb, i.amount,"
    " now() + make_interval(secs => $10::float8), CASE WHEN $10::float8 IS NULL THEN 0 ELSE 1 END"
    " FROM incoming i JOIN fresh f ON f.inbox_id = i.id"
    " RETURNING id, connector, kind, connector_txn_id, payment_id, tries, received_at, traceparent, account_id)"
    + _TAKEN_WITH_SEEN.format(claimed="$10::float8 IS NOT NULL", extra="")
)


@single_unit
async def insert_many(conn: asyncpg.Connection, items: list[tuple[GatewayEvent, str, str | None]],
                      lease_s: float | None = None, ids: list[str] | None = None) -> list[dict]:
    """Store several webhooks in one statement (group commit).

    Args:
      items: ``(event, raw body, traceparent of the receiving request or None)``.
      lease_s: claim the new rows for this long, for the caller to apply them
        itself (as :func:`claim` would have); None leaves them to any processor.
      ids: the inbox ids to give the items, in order (new ones when None): a
        caller that made them knows which of its items were new by the rows' ids.

    Returns:
      The rows that were new, in the form :func:`claim` returns; duplicates
      (same connector + event id) are skipped. A claimed payment outcome
      whose payment exists also carries ``seen``, what :func:`apply` would
      read first (a :class:`Seen`): given to it, that saves the apply a round trip.
    """
    ids = ids if ids is not None else [new_id("whi") for _ in items]
    rows = await conn.fetch(
        INSERT_SQL, ids, [e.connector for e, *_ in items], [e.event_id for e, *_ in items],
        [e.kind for e, *_ in items], [e.connector_txn_id for e, *_ in items], [e.payment_id for e, *_ in items],
        [e.object_id for e, *_ in items], [raw for _, raw, *_ in items],
        [item[2] if len(item) > 2 else None for item in items], lease_s,
        [e.account_id for e, *_ in items], [e.payment_txn_id for e, *_ in items],
        [e.error_code for e, *_ in items], [e.message for e, *_ in items],
        [json.dumps(e.method_details) if e.method_details else None for e, *_ in items],
        # Only a real connector's (the simulators' disputes re-read their raw body, as before).
        [e.amount if e.account_id is not None else None for e, *_ in items],
    )
    return sorted((_claimed_form(r) for r in rows), key=lambda r: r["id"])


def _claimed_form(record: asyncpg.Record) -> dict:
    """A row of :data:`_TAKEN_WITH_SEEN`, plus ``seen`` (a :class:`Seen`) when the statement read it."""
    row = {key[len("inbox_"):]: value for key, value in record.items() if key.startswith("inbox_")}
    if record["id"] is not None:  # the payment's, found for a claimed payment outcome
        payment = {k: v for k, v in record.items() if not k.startswith(("inbox_", "seen_"))}
        row["seen"] = Seen(row["kind"], row["connector_txn_id"], record["seen_matched_attempt"], payment,
                           [dict(a) for a in record["seen_attempts"]])
    return row


CLAIM_SQL = (
    "WITH taken AS (UPDATE webhook_inbox SET claimed_until = now() + make_interval(secs => $2), tries = tries + 1"
    " WHERE id IN (SELECT id FROM webhook_inbox WHERE processed_at IS NULL"
    "   AND (claimed_until IS NULL OR claimed_until < now()) ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"
    " RETURNING id, connector, kind, connector_txn_id, payment_id, tries, received_at, traceparent, account_id)"
    + _TAKEN_WITH_SEEN.format(claimed="true", extra="")
)


@single_unit
async def claim(conn: asyncpg.Connection, limit: int, lease_s: float) -> list[dict]:
    """Lease up to ``limit`` unprocessed rows, oldest first.

    Returns:
      The rows; a payment outcome whose payment exists also carries ``seen``,
      as :func:`insert_many` returns it.
    """
    rows = await conn.fetch(CLAIM_SQL, limit, lease_s)
    return sorted((_claimed_form(r) for r in rows), key=lambda r: r["id"])


@single_unit
async def ignore_late(conn: asyncpg.Connection, ids: list[str], claims: list[int]) -> set[str]:
    """Mark claimed payment-outcome rows whose payment no longer awaits an answer
    (neither ``processing`` nor ``requires_action``) as ``ignored``, in bulk.

    They are late or duplicate outcomes that :func:`apply` would ignore one by
    one (a terminal status never moves); doing it in one statement keeps the
    processor ahead of a gateway that repeats itself.

    Args:
      claims: each row's ``tries`` as the caller's claim left it (as for :func:`apply`):
        rows claimed by another process since are left to it.

    Returns:
      The ids marked.
    """
    rows = await conn.fetch(
        "UPDATE webhook_inbox i SET status = 'ignored', merchant_id = p.merchant_id, processed_at = now(),"
        " claimed_until = NULL FROM payments p, unnest($1::text[], $2::int[]) AS mine(id, tries)"
        " WHERE i.id = mine.id AND i.tries = mine.tries AND i.processed_at IS NULL AND i.kind LIKE 'payment.%'"
        " AND p.id = i.payment_id AND p.status NOT IN ('processing', 'requires_action')"
        # a real gateway may still capture or cancel an authorisation itself, or
        # take the money of a payment canceled here (flagged for review)
        " AND NOT (i.kind IN ('payment.canceled', 'payment.succeeded') AND p.status = 'requires_capture'"
        "          AND i.account_id IS NOT NULL)"
        " AND NOT (i.kind = 'payment.succeeded' AND p.status = 'canceled' AND i.account_id IS NOT NULL)"
        " AND NOT EXISTS (SELECT 1 FROM payment_attempts a WHERE a.connector = i.connector"
        "                 AND a.connector_txn_id = i.connector_txn_id AND a.payment_id <> p.id)"
        " RETURNING i.id", ids, claims,
    )
    return {r["id"] for r in rows}


@single_unit
async def release(conn: asyncpg.Connection, inbox_id: str, error: str, claim: int | None = None) -> None:
    """Give a row back to be tried again in a second, without counting a failure.

    For rows that could not be applied *yet* (their payment's commit may still
    be on its way, a dispute not open yet): not a failure of the apply.

    Args:
      claim: as for :func:`apply`: a row another process claimed since is left alone.
    """
    await conn.execute(
        "UPDATE webhook_inbox SET claimed_until = now() + interval '1 second', last_error = $2"
        " WHERE id = $1 AND processed_at IS NULL AND " + _CLAIM_HELD.format(claim="$3"),
        inbox_id, error[:1000], claim,
    )


async def fail(conn: asyncpg.Connection, inbox_id: str, error: str, schedule: list[int],
               claim: int | None = None) -> str:
    """Record a failed apply: retry after the next delay of ``schedule``, or, once it
    is spent, make the row a dead letter (``dead``, kept for an operator's replay).

    Args:
      schedule: delays in seconds (``PAYCAST_INBOX_RETRY_SCHEDULE``); failure
        ``n`` (1-based) waits ``schedule[n-1]``; failure ``len(schedule) + 1`` is final.
      claim: as for :func:`apply`: a row another process claimed since is left alone.

    Returns:
      ``pending`` (will be retried), ``dead``, or ``missing`` (processed, or claimed by another).
    """
    row = await conn.fetchrow(
        "UPDATE webhook_inbox SET failures = failures + 1, last_error = $2,"
        " status = CASE WHEN failures + 1 > cardinality($3::int[]) THEN 'dead' ELSE status END,"
        " processed_at = CASE WHEN failures + 1 > cardinality($3::int[]) THEN now() END,"
        " claimed_until = CASE WHEN failures + 1 > cardinality($3::int[]) THEN NULL"
        "   ELSE now() + make_interval(secs => ($3::int[])[failures + 1]) END"
        " WHERE id = $1 AND processed_at IS NULL AND " + _CLAIM_HELD.format(claim="$4") + " RETURNING status",
        inbox_id, error[:1000], schedule, claim,
    )
    return row["status"] if row else "missing"


async def get_item(conn: asyncpg.Connection, inbox_id: str) -> dict | None:
    row = await conn.fetchrow("SELECT * FROM webhook_inbox WHERE id = $1", inbox_id)
    return render.inbox_item(row) if row else None


async def list_items(conn: asyncpg.Connection, *, limit: int, starting_after: str | None,
                     status: str | None, connector: str | None) -> tuple[list[dict], bool]:
    """A page of inbox items, newest first (received_at, then id).

    Returns:
      The items and whether more follow.
    """
    rows = await conn.fetch(
        "SELECT * FROM webhook_inbox WHERE ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR connector = $3)"
        " AND ($4::text IS NULL OR (received_at, id) < (SELECT received_at, id FROM webhook_inbox WHERE id = $4))"
        " ORDER BY received_at DESC, id DESC LIMIT $1",
        limit + 1, status, connector, starting_after,
    )
    return [render.inbox_item(r) for r in rows[:limit]], len(rows) > limit


async def reopen(conn: asyncpg.Connection, inbox_id: str) -> dict | None:
    """Put an item back to ``pending``, due now, with its failures forgotten (replay).

    Returns:
      The row (every column, as :func:`claim` gives them), or None if there is no such item.

    Raises:
      StateError: the item was already ``applied`` (exactly once still holds).
    """
    row = await conn.fetchrow("SELECT * FROM webhook_inbox WHERE id = $1 FOR UPDATE", inbox_id)
    if row is None:
        return None
    if row["status"] == "applied":
        raise StateError("This inbox item was already applied; it cannot be applied twice.",
                         code="inbox_item_already_applied")
    row = await conn.fetchrow(
        "UPDATE webhook_inbox SET status = 'pending', processed_at = NULL, claimed_until = NULL, failures = 0"
        " WHERE id = $1 RETURNING *", inbox_id,
    )
    return dict(row)


async def _mark(conn: asyncpg.Connection, inbox_id: str, status: str, merchant_id: str | None) -> str:
    await conn.execute(
        "UPDATE webhook_inbox SET status = $2, merchant_id = $3, processed_at = now(), claimed_until = NULL"
        " WHERE id = $1", inbox_id, status, merchant_id,
    )
    return status


_ATTEMPT_COLUMNS = "id, payment_id, status, connector_account_id"


async def _match(conn: asyncpg.Connection, row) -> tuple[asyncpg.Record | None, str | None]:
    """The payment a webhook is about, and the attempt it answers (if still open).

    A refund or dispute event of a real connector names its payment by the
    gateway's id of the charge (``payment_txn_id``), as the attempt recorded
    it. An event received on a connector account's path (``account_id``)
    belongs to that account only: an attempt of another account (or of no
    account) is not its payment, whatever its metadata says.

    Returns:
      The payment row (locked) and the open attempt's id; ``(None, None)`` for
      no payment, and :data:`FOREIGN` as the attempt when the payment's
      attempt is another account's.
    """
    txn = row["payment_txn_id"] or row["connector_txn_id"]
    attempt = await conn.fetchrow(
        f"SELECT {_ATTEMPT_COLUMNS} FROM payment_attempts WHERE connector = $1 AND connector_txn_id = $2",
        row["connector"], txn,
    ) if txn else None
    account = row["account_id"]
    if attempt is not None and account is not None and attempt["connector_account_id"] != account:
        payment = await conn.fetchrow("SELECT * FROM payments WHERE id = $1", attempt["payment_id"])
        return payment, FOREIGN
    payment_id = attempt["payment_id"] if attempt else row["payment_id"]
    if not payment_id:
        return None, None
    payment = await conn.fetchrow("SELECT * FROM payments WHERE id = $1 FOR UPDATE", payment_id)
    if payment is None:
        return None, None
    if attempt is None:
        # The event came before the attempt recorded the gateway's id (its
        # call still in flight): the latest open attempt on that connector
        # (of that account, for a real connector).
        attempt = await conn.fetchrow(
            f"SELECT {_ATTEMPT_COLUMNS} FROM payment_attempts WHERE payment_id = $1 AND connector = $2"
            " AND status IN ('started', 'unknown') AND connector_account_id IS NOT DISTINCT FROM $3"
            " ORDER BY id DESC LIMIT 1", payment_id, row["connector"], account,
        )
        if attempt is None and account is not None:
            owned = await conn.fetchval(
                "SELECT true FROM payment_attempts WHERE payment_id = $1 AND connector_account_id = $2 LIMIT 1",
                payment_id, account)
            if not owned:
                return payment, FOREIGN
    return payment, attempt["id"] if attempt else None


# The attempt "id" :func:`_match` gives for a payment that is not the event's account's.
FOREIGN = "foreign"

# What each payment event says, as a connector outcome (payment.succeeded and
# payment.failed are resolved in _outcome: they depend on the payment).
_OUTCOME_OF_KIND = {
    "payment.authorized": OutcomeKind.AUTHORIZED,
    "payment.requires_action": OutcomeKind.REQUIRES_ACTION,
    "payment.canceled": OutcomeKind.CANCELED,
}


def _outcome(kind: str, connector_txn_id: str, payment, row=None) -> Outcome:
    """What a payment outcome webhook says, as a connector outcome.

    Args:
      row: the inbox row, for what a real connector's event adds (its error
        code and message, the card's brand and last 4); None on the hot path.
    """
    code = message = details = None
    real = row is not None and row["account_id"] is not None
    if row is not None:
        code, message, details = row["error_code"], row["message"], row["method_details"]
    if kind in _OUTCOME_OF_KIND:
        return Outcome(_OUTCOME_OF_KIND[kind], connector_txn_id, code, message, method_details=details)
    if kind == "payment.succeeded":
        # A simulator's success of a manual-capture payment is its authorisation;
        # a real gateway says payment.authorized for that, and succeeded once captured.
        manual = payment["capture_method"] == "manual" and not real
        return Outcome(OutcomeKind.AUTHORIZED if manual else OutcomeKind.SUCCEEDED, connector_txn_id,
                       method_details=details)
    return Outcome(OutcomeKind.DECLINED, connector_txn_id, code or "payment_failed",
                   message or "The connector reported that the payment failed.", method_details=details)


async def _apply_payment_outcome(conn: asyncpg.Connection, row, payment, attempt_id: str | None) -> str:
    kind, status = row["kind"], payment["status"]
    if kind == "payment.attempt_failed":
        return await _record_attempt_failure(conn, row, payment, attempt_id)
    if status == "requires_capture" and row["account_id"] is not None \
            and kind in ("payment.canceled", "payment.succeeded"):
        return await _settle_authorisation(conn, kind, payment)
    if status == "canceled" and row["account_id"] is not None and kind == "payment.succeeded":
        # Paid at the gateway after it was canceled here (a Razorpay order
        # cannot be canceled: its checkout may still take the money): the
        # status stays, a person is told to refund it there.
        await payments.flag_for_review(conn, payment["id"], {
            "code": "charged_after_cancel",
            "message": "The gateway reports this payment captured after it was canceled; refund it there."})
        return "applied"
    if status not in ("processing", "requires_action") or attempt_id is None:
        return "ignored"  # late or duplicate outcome: a terminal status never moves
    outcome = _outcome(kind, row["connector_txn_id"], payment, row)
    if kind == "payment.authorized" and payment["capture_method"] == "automatic":
        # Razorpay says authorized for every payment, then captured: with
        # automatic capture the customer has acted and the capture follows.
        outcome = Outcome(OutcomeKind.PENDING, row["connector_txn_id"], method_details=outcome.method_details)
    if not _moves(status, outcome):
        return "ignored"  # already where it says (the confirm's answer said so first)
    await payments.settle(conn, payment["merchant_id"], payment["id"], attempt_id, outcome)
    return "applied"


def _moves(status: str, outcome: Outcome) -> bool:
    """Whether an event's outcome changes a payment awaiting an answer (a repeat of
    where it already is, pending while processing, changes nothing)."""
    if outcome.kind is OutcomeKind.REQUIRES_ACTION:
        return status != "requires_action"
    if outcome.kind is OutcomeKind.PENDING:
        return status == "requires_action"
    return True


async def _settle_authorisation(conn: asyncpg.Connection, kind: str, payment) -> str:
    """A real gateway settled an authorisation itself: captured (Razorpay's
    dashboard, or its captured event overtaking its authorized one) or
    canceled (Stripe's dashboard, an expired authorisation)."""
    loaded = await payments.load(conn, payment["merchant_id"], payment["id"])
    if kind == "payment.succeeded":
        await payments.capture(conn, loaded, payment["amount_capturable"])
    else:
        await payments.cancel(conn, loaded)
    return "applied"


async def _record_attempt_failure(conn: asyncpg.Connection, row, payment, attempt_id: str | None) -> str:
    """One try failed (Razorpay ``payment.failed``) while the customer may try
    again in the same checkout: the attempt's ``error_code`` and the payment's
    ``last_error`` say so, the status stays (the action deadline ends it)."""
    if payment["status"] not in ("processing", "requires_action") or attempt_id is None:
        return "ignored"
    code = row["error_code"] or "payment_failed"
    error = {"code": code, "message": row["message"] or "The customer's payment attempt failed."}
    await conn.execute("UPDATE payment_attempts SET error_code = $2, updated_at = now()"
                       " WHERE id = $1 AND status IN ('started', 'unknown')", attempt_id, code)
    await conn.execute("UPDATE payments SET last_error = $2, updated_at = now() WHERE id = $1", payment["id"], error)
    return "applied"


# kind prefix → applier(conn, inbox row, payment row, attempt id) -> status.
# An applier may raise NotYetApplicable: the row stays unprocessed and is
# tried again after a short while (apply() then answers DEFERRED).
Applier = Callable[[asyncpg.Connection, asyncpg.Record, asyncpg.Record, str | None], Awaitable[str]]
APPLIERS: dict[str, Applier] = {
    "payment": _apply_payment_outcome,
    "refund": refunds.apply_webhook,
    "dispute": disputes.apply_webhook,
}
# Kinds about something other than a payment (a payout of a wallet withdrawal):
# applier(conn, inbox row) -> (status, merchant id).
StandaloneApplier = Callable[[asyncpg.Connection, asyncpg.Record], Awaitable[tuple[str, str | None]]]
STANDALONE_APPLIERS: dict[str, StandaloneApplier] = {"payout": accounts.apply_payout_webhook}
# Kinds whose appliers may raise NotYetApplicable; they run in a savepoint
# (the others skip its two extra round trips: payment outcomes are the hot path).
DEFERRABLE = frozenset({"dispute"})


_READ_FOR_APPLY = (
    "WITH taken AS (SELECT * FROM webhook_inbox WHERE id = $1)"
    + _TAKEN_WITH_SEEN.format(claimed="true", extra=", t.processed_at AS inbox_processed_at,"
                              " t.received_at > now() - make_interval(secs => $2) AS inbox_young")
)


def _mark_with(inbox_id: str, status: str, merchant_id: str, claim: int | None) -> payments.Also:
    """Mark an inbox row processed together with the settle it causes: the
    payment moves only while the row is unprocessed (and still under ``claim``,
    when given), the row is marked only if the payment moved."""
    held = f"processed_at IS NULL AND {_CLAIM_HELD.format(claim='$also_claim')}"
    return payments.Also(
        condition=f"EXISTS (SELECT 1 FROM webhook_inbox WHERE id = $also_inbox_id AND {held})",
        cte=("-- the inbox row: processed, if the payment moved and the row was still unprocessed (and ours)\n"
             "also AS (\n"
             "  UPDATE webhook_inbox SET status = $also_status, merchant_id = $also_merchant_id,\n"
             "    processed_at = now(), claimed_until = NULL\n"
             f"  WHERE id = $also_inbox_id AND {held} AND EXISTS (SELECT 1 FROM upd)\n"
             "  RETURNING id)"),
        args={"also_inbox_id": inbox_id, "also_status": status, "also_merchant_id": merchant_id,
              "also_claim": claim})


# The caller's claim (``tries`` as its claim left it; NULL: no claim to check,
# e.g. an operator's replay) is still the row's.
_CLAIM_HELD = "({claim}::int IS NULL OR tries = {claim}::int)"


@dataclass(frozen=True)
class Seen:
    """What :func:`apply` decides the hot path on: an unprocessed payment outcome, and its payment as read.

    Read either just before the apply or by the insert that stored the row
    (:func:`insert_many`). Either may be stale by the time the settle runs;
    the settle is guarded by the payment as read and the row still
    unprocessed, and a failed guard falls back to :func:`apply_locked`.
    """

    kind: str
    connector_txn_id: str | None
    matched_attempt: str | None
    payment: dict
    attempts: list[dict]


async def _read_for_apply(conn: asyncpg.Connection, inbox_id: str, grace_s: float,
                          claim: int | None = None) -> Seen | str | None:
    """The row's :class:`Seen`; :data:`RETRY` for an outcome whose payment is not there yet (within the
    grace); :data:`TAKEN_OVER` for an unprocessed row no longer under ``claim``; None when the hot
    path does not apply (processed, another kind, no payment)."""
    record = await conn.fetchrow(_READ_FOR_APPLY, inbox_id, grace_s)
    if record is None:
        return None
    row = _claimed_form(record)
    if row["processed_at"] is None and claim is not None and row["tries"] != claim:
        return TAKEN_OVER
    if row["processed_at"] is not None or row["kind"] not in _OUTCOME_KINDS or row["account_id"] is not None:
        return None
    if "seen" not in row:  # no payment
        return RETRY if row["young"] else None  # the payment's own commit may still be on its way
    return row["seen"]


@single_unit
async def apply(conn: asyncpg.Connection, inbox_id: str, grace_s: float = 30.0, seen: Seen | None = None,
                claim: int | None = None) -> str:
    """Apply one stored webhook, exactly once.

    A payment outcome for a payment still ``processing`` (the hot path) is
    two statements and no transaction: one read of the row, its payment and
    attempts, then one statement that marks the row processed and settles the
    payment, each guarded by the other (the row still unprocessed, the
    payment as read), so exactly once holds without locks. Everything else,
    and a guard that fails, takes :func:`apply_locked` in a transaction.

    Args:
      grace_s: how long a webhook for a payment not (yet) in the database is retried.
      seen: the read, when the insert that stored the row already made it
        (the row's ``seen`` from :func:`insert_many`): the hot path is then one statement.
      claim: the row's ``tries`` as the caller's claim left it (:func:`claim`, :func:`insert_many`):
        the apply is refused once another process claimed the row since. None: no claim to check.

    Returns:
      As :func:`apply_locked`.
    """
    if seen is None:
        read = await _read_for_apply(conn, inbox_id, grace_s, claim)
        if read in (RETRY, TAKEN_OVER):
            return read
        seen = read if isinstance(read, Seen) else None
    if seen is not None:
        payment = seen.payment
        attempt_id = seen.matched_attempt or _open_attempt(seen.attempts, payment)
        if payment["status"] == "processing" and attempt_id is not None:
            outcome = _outcome(seen.kind, seen.connector_txn_id, payment)
            applied = await payments.settle_known(conn, payment, seen.attempts, attempt_id, outcome,
                                                  also=_mark_with(inbox_id, "applied", payment["merchant_id"],
                                                                  claim))
            if applied is not None:
                return "applied"
    async with conn.transaction():
        return await apply_locked(conn, inbox_id, grace_s, claim)


_OUTCOME_KINDS = frozenset({"payment.succeeded", "payment.failed"})


def _open_attempt(attempts, payment) -> str | None:
    """The latest open attempt on the payment's connector (when the webhook names no known txn)."""
    if payment["id"] is None:
        return None
    open_ = [a for a in attempts if a["connector"] == payment["connector"] and a["status"] in ("started", "unknown")]
    return open_[-1]["id"] if open_ else None


async def apply_locked(conn: asyncpg.Connection, inbox_id: str, grace_s: float = 30.0,
                       claim: int | None = None) -> str:
    """Apply one stored webhook, exactly once, under row locks (inside a transaction).

    Args:
      grace_s: how long a webhook for a payment not (yet) in the database is retried.
      claim: as for :func:`apply`.

    Returns:
      The row's final status (``applied``, ``ignored``, ``unmatched``, ``unhandled``),
      :data:`RETRY` when it should be tried again later (its payment is not in the
      database yet), ``deferred`` when it cannot be applied yet (it stays unprocessed),
      or :data:`TAKEN_OVER` (nothing done: another process holds the row now).
    """
    row = await conn.fetchrow("SELECT * FROM webhook_inbox WHERE id = $1 FOR UPDATE", inbox_id)
    if row is None or row["processed_at"] is not None:
        return row["status"] if row else "missing"
    if claim is not None and row["tries"] != claim:
        return TAKEN_OVER
    if row["kind"] == "ignored":
        return await _mark(conn, inbox_id, "ignored", None)  # a type we do not apply, kept
    standalone = STANDALONE_APPLIERS.get(row["kind"].split(".")[0])
    if standalone is not None:
        status, merchant_id = await standalone(conn, row)
        return await _mark(conn, inbox_id, status, merchant_id)
    payment, attempt_id = await _match(conn, row)
    if attempt_id == FOREIGN:
        # Sent to one connector account's path about another's payment: it moves nothing.
        await conn.execute("UPDATE webhook_inbox SET last_error = $2 WHERE id = $1", inbox_id,
                           "the payment is not this connector account's")
        return await _mark(conn, inbox_id, "ignored", None)
    if payment is None:
        young = await conn.fetchval("SELECT $1::timestamptz > now() - make_interval(secs => $2)",
                                    row["received_at"], grace_s)
        if young:
            return RETRY  # the payment's own commit may still be on its way
        return await _mark(conn, inbox_id, "unmatched", None)
    prefix = row["kind"].split(".")[0]
    applier = APPLIERS.get(prefix)
    if applier is None:
        return await _mark(conn, inbox_id, "unhandled", payment["merchant_id"])
    if prefix not in DEFERRABLE:
        status = await applier(conn, row, payment, attempt_id)
        return await _mark(conn, inbox_id, status, payment["merchant_id"])
    try:
        async with conn.transaction():  # a savepoint: a deferred apply leaves nothing behind
            status = await applier(conn, row, payment, attempt_id)
    except NotYetApplicable as exc:
        await release(conn, inbox_id, f"deferred: {exc}")
        return DEFERRED
    return await _mark(conn, inbox_id, status, payment["merchant_id"])


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM webhook_inbox GROUP BY status")
    return {r["status"]: r["n"] for r in rows}
