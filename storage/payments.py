"""Payments and their attempts. Every status write is conditional on the status
the state machine expects, so two processes can never both win a transition.

Units of work on the hot path are one statement each (docs/architecture.md decision 7):
data-modifying CTEs write the payment, its attempt and its events (with the
merchant's next seqs, their webhook deliveries and their customers' realtime
messages, :class:`storage.events.Append`),
guarded by the statuses :mod:`domain.payments` allows (``sources``) and by the
``updated_at`` the caller saw, and the API form is rendered from what the
caller already knows. Only when something must commit with them that needs a
statement of its own (an order or deposit that follows the payment) do they
open a transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence

import asyncpg

from domain import render
from domain.cards import public_card
from domain.errors import InvalidRequest, NotFound, StateError
from domain.events import NewEvent, payment_event
from domain.ids import new_id
from domain.payments import AWAITING_ANSWER, Outcome, OutcomeKind, Status, Trigger, moves, next_status, sources
from domain.payments import settle as settle_outcome
from storage import events as event_log
from storage import orders
from storage.database import commits_of, single_unit
from storage.pagination import page_rows
from storage.sql import q
from telemetry import metrics

# PAYCAST_ACTION_DEADLINE_S's default: callers pass the setting.
ACTION_DEADLINE_S = 3600.0


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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A payment as one statement read it: its row, its attempts, and its merchant's routing."""

    row: dict
    attempts: list[dict]
    routing: dict | None

    @property
    def snapshot(self) -> dict:
        return render.payment(self.row, self.attempts)

    def open_attempt(self) -> dict | None:
        """The latest attempt still waiting for its answer (``started``/``unknown``):
        the one a customer action belongs to."""
        return next((a for a in reversed(self.attempts) if a["status"] in ("started", "unknown")), None)

    def charged_attempt(self) -> dict | None:
        """The attempt a capture or cancel addresses: the authorised one, else the open one."""
        return next((a for a in self.attempts if a["status"] == "authorized"), None) or self.open_attempt()


_LOAD_SQL = (
    "SELECT p.*, m.routing AS merchant_routing,"
    " ARRAY(SELECT a FROM payment_attempts a WHERE a.payment_id = p.id ORDER BY a.id) AS attempt_rows"
    " FROM payments p JOIN merchants m ON m.id = p.merchant_id WHERE p.id = $1 AND p.merchant_id = $2"
)


@single_unit
async def load(conn: asyncpg.Connection, merchant_id: str, payment_id: str) -> Loaded:
    """The payment, its attempts and its merchant's routing, in one statement.

    Raises:
      NotFound: no such payment (or another merchant's).
    """
    row = await conn.fetchrow(_LOAD_SQL, payment_id, merchant_id)
    if row is None:
        raise NotFound(f"No such payment: '{payment_id}'", param="id")
    payment = dict(row)
    attempts = [dict(a) for a in payment.pop("attempt_rows")]
    return Loaded(payment, attempts, payment.pop("merchant_routing"))


# Objects that follow a payment's status in the same transaction (an order is
# paid when its payment succeeds; a wallet deposit is credited). A follower is
# ``applies(payment row, new status) -> bool`` (pure, so a unit of work knows
# before its statement whether it needs a transaction) and ``follow(conn,
# payment row, new status)`` returning the events of what it changed. The
# running system gives them, in order, to the database
# (:class:`storage.database.Commits`, components/__init__.py); a unit of work
# finds them on its connection (:func:`storage.database.commits_of`); storage alone has none.
@dataclasses.dataclass(frozen=True)
class Follower:
    applies: Callable[[Mapping, str], bool]
    follow: Callable[[asyncpg.Connection, Mapping, str], Awaitable[list[NewEvent]]]


async def _follow_order(conn: asyncpg.Connection, row: Mapping, status: str) -> list[NewEvent]:
    event = await orders.follow_payment(conn, row["merchant_id"], row["order_id"], status)
    return [event] if event else []


ORDER_FOLLOWER = Follower(lambda row, status: bool(row["order_id"]) and status in ("succeeded", "failed"),
                          _follow_order)


def _followed(followers: Sequence[Follower], row: Mapping, status: str | None) -> list[Follower]:
    return [f for f in followers if status and f.applies(row, status)]


def may_be_followed(followers: Sequence[Follower], row: Mapping) -> bool:
    """Whether settling this payment may move something else too (its order, a wallet).

    Such a settle locks more than the payment and the merchant's seq row, so
    it is not batched with others (a batch holds the merchant's row while its
    later units lock theirs, which would invert the lock order).
    """
    return any(f.applies(row, status) for f in followers for status in ("succeeded", "failed"))


async def _commit_events(conn: asyncpg.Connection, row, status_event: str | None) -> dict:
    """Render the payment, append its event (and its followers'), return the snapshot (inside a transaction)."""
    snapshot = await _render(conn, row)
    pending: list[NewEvent] = []
    if status_event:
        pending.append(payment_event(status_event, snapshot))
        for follower in _followed(commits_of(conn).followers, row, status_event):
            pending.extend(await follower.follow(conn, row, status_event))
    await event_log.append_all(conn, row["merchant_id"], pending)
    return snapshot


def statement(head: str, append: event_log.Append | None, select: str = "") -> str:
    """A unit of work's whole statement: its own CTEs (``head``, one of them named
    ``upd``: the payment row it wrote), the event log's (``append``: None when
    followers append the events after it), and what it returns: ``changed``
    (whether ``upd`` matched), the columns of ``select``, and the event log's."""
    if append is None:
        return f"WITH\n{head}\nSELECT (SELECT count(*) FROM upd) AS changed{select}"
    return (f"WITH\n{head},\n{append.sql}\n"
            f"SELECT (SELECT count(*) FROM upd) AS changed{select}, {append.columns}")


async def _write(conn: asyncpg.Connection, head: str, args: dict[str, object], row: Mapping, status: str | None,
                 events: list[NewEvent], now: dt.datetime, select: str = "") -> Mapping | None:
    """Run a unit of work's statement (:func:`statement`): its own CTEs
    (``head``), then ``events`` appended if ``upd`` returned a row.

    One statement, atomic by itself (the events' projections are CTEs of it),
    unless a follower applies to the payment's new status: then the statement
    and the followers' share one transaction. With followers the events are
    appended after them, so the merchant's seq row is locked last, as in every
    other unit of work.

    Args:
      head: CTEs with named parameters (:mod:`storage.sql`), ``args`` their values.
      row: the payment row as the statement leaves it (for the followers).
      status: the payment's new status, when it changes.
      select: more columns for the statement's result (``, (SELECT x FROM att) AS x``).

    Returns:
      The statement's result (``changed`` and the columns of ``select``), or
      None when ``upd`` did not match (the guard failed, nothing was written).
    """
    commits = commits_of(conn)
    followers = _followed(commits.followers, row, status)
    if followers:
        # Lock order, as everywhere: the payment, then what follows it (order,
        # wallet), then the merchant's seq row last: so the events are appended
        # after the followers, not in the payment's statement.
        async with _transaction(conn):
            query = q(statement(head, None, select))
            result = await conn.fetchrow(query.sql, *query.args(args))
            if not result["changed"]:
                return None
            pending = list(events)
            for follower in followers:
                pending.extend(await follower.follow(conn, row, status))
            await event_log.append_all(conn, row["merchant_id"], pending)
        return result
    append = event_log.Append(row["merchant_id"], events, now, projections=commits.projections, guard="upd")
    query = q(statement(head, append, select))
    result = await conn.fetchrow(query.sql, *query.args({**args, **append.args}))
    if not result["changed"]:
        return None
    await append.committed(conn, result)
    return result


@contextlib.asynccontextmanager
async def _transaction(conn: asyncpg.Connection):
    """A transaction, unless the caller's is already open (no savepoint round trips)."""
    if conn.is_in_transaction():
        yield
        return
    async with conn.transaction():
        yield


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


# The account a new attempt on a real connector goes to: the merchant's active
# one for that connector (NULL for the simulators, which have none).
_ACCOUNT_OF = """(
    SELECT ca.id FROM connector_accounts ca
    WHERE ca.merchant_id = $merchant_id AND ca.connector = $connector AND ca.status = 'active')"""

_INSERT_HEAD = f"""\
-- the payment: requires_confirmation, or processing with its first attempt (confirm: true)
upd AS (
  INSERT INTO payments (id, merchant_id, order_id, customer_id, amount, currency, status, capture_method,
    payment_method, connector, pinned_connector, metadata, processing_deadline, return_url, action_deadline,
    created_at, updated_at)
  VALUES ($payment_id, $merchant_id, $order_id, $customer_id, $amount, $currency, $status, $capture_method,
    $payment_method, $connector, $pinned_connector, $metadata,
    CASE WHEN $deadline_s::float8 IS NOT NULL
      THEN $now::timestamptz + make_interval(secs => $deadline_s::float8) END,
    $return_url,
    CASE WHEN $attempt_id::text IS NOT NULL
      THEN $now::timestamptz + make_interval(secs => $action_deadline_s::float8) END,
    $now, $now)
  RETURNING id),
-- its first attempt, started (only with confirm: true)
att AS (
  INSERT INTO payment_attempts (id, payment_id, merchant_id, connector, status, connector_account_id,
    created_at, updated_at)
  SELECT $attempt_id, $payment_id, $merchant_id, $connector, 'started', {_ACCOUNT_OF}, $now, $now
  WHERE $attempt_id::text IS NOT NULL
  RETURNING connector_account_id)"""
# The attempt's account, read back by the statement that inserted it.
_ATTEMPT_ACCOUNT = ", (SELECT connector_account_id FROM att) AS connector_account_id"


async def _insert(conn: asyncpg.Connection, merchant_id: str, spec: dict, candidates: Sequence[str] | None,
                  deadline_s: float | None, action_deadline_s: float = ACTION_DEADLINE_S) -> Begun | dict:
    """Insert a payment (``requires_confirmation``, or ``processing`` with its first
    attempt ``started`` when ``candidates`` are given) and its ``payment.created``
    event, in one statement unless its order must be checked first."""
    customer_id = spec.get("customer_id")
    if spec.get("order_id") is not None:  # "" too: it names no order (not "no order")
        customer_id = await _check_order(conn, merchant_id, spec, customer_id)
    now = _now()
    row = {
        "id": new_id("pay"), "merchant_id": merchant_id, "order_id": spec.get("order_id"),
        "customer_id": customer_id, "amount": spec["amount"], "currency": spec["currency"],
        "status": Status.REQUIRES_CONFIRMATION.value, "capture_method": spec["capture_method"],
        "payment_method": spec["payment_method"], "connector": None, "pinned_connector": spec.get("connector"),
        "amount_capturable": 0, "amount_received": 0, "amount_refunded": 0, "last_error": None,
        "review_required": False, "metadata": spec.get("metadata") or {}, "created_at": now, "updated_at": now,
        "next_action": None, "cancellation_reason": None, "return_url": spec.get("return_url"),
    }
    created = render.payment(row, [])
    attempt_id = None
    if candidates is not None:
        attempt_id = new_id("att")
        row = {**row, "status": Status.PROCESSING.value, "connector": candidates[0]}
    written = await _write(conn, _INSERT_HEAD, {
        "payment_id": row["id"], "merchant_id": merchant_id, "order_id": row["order_id"], "customer_id": customer_id,
        "amount": row["amount"], "currency": row["currency"], "status": row["status"],
        "capture_method": row["capture_method"], "payment_method": row["payment_method"],
        "connector": row["connector"], "pinned_connector": row["pinned_connector"], "metadata": row["metadata"],
        "deadline_s": deadline_s if attempt_id else None, "now": now, "attempt_id": attempt_id,
        "return_url": row["return_url"], "action_deadline_s": action_deadline_s,
    }, row, None, [payment_event("created", created)], now, _ATTEMPT_ACCOUNT)
    metrics.transition("payment", row["id"], None, "requires_confirmation", amount=row["amount"],
                       currency=row["currency"])
    if attempt_id is None:
        return created
    metrics.transition("payment", row["id"], "requires_confirmation", "processing", connector=candidates[0])
    attempt = {"id": attempt_id, "payment_id": row["id"], "merchant_id": merchant_id, "connector": candidates[0],
               "status": "started", "connector_txn_id": None, "error_code": None, "created_at": now,
               "updated_at": now, "connector_account_id": written["connector_account_id"]}
    return Begun(attempt_id, candidates[0], tuple(candidates), row, [attempt])


@single_unit
async def create(conn: asyncpg.Connection, merchant_id: str, spec: dict) -> dict:
    """Insert a payment in ``requires_confirmation`` and its ``payment.created`` event.

    One statement; two when the payment names an order (its amount is checked first).

    Args:
      spec: validated fields: amount, currency, order_id, customer_id,
        payment_method (stored form), capture_method, connector, metadata.

    Raises:
      NotFound: ``order_id`` is not one of the merchant's orders.
      InvalidRequest: amount or currency differ from the order's.
    """
    return await _insert(conn, merchant_id, spec, None, None)


@dataclasses.dataclass(frozen=True)
class Begun:
    """A started attempt and what the actor needs to call the connector and settle it."""

    attempt_id: str
    connector: str
    candidates: tuple[str, ...]
    payment: dict  # the row as this attempt's statement left it
    attempts: list  # every attempt of the payment, this one last

    @property
    def account_id(self) -> str | None:
        """The connector account (``mca_…``) of the attempt, None for a simulator."""
        return self.attempts[-1].get("connector_account_id")


# (payment row, the merchant's stored routing config) -> candidate connectors.
Route = Callable[[Mapping, dict | None], list[str]]


@single_unit
async def create_and_begin(conn: asyncpg.Connection, merchant_id: str, spec: dict, deadline_s: float,
                           candidates: Sequence[str], action_deadline_s: float = ACTION_DEADLINE_S) -> Begun:
    """Create a payment already ``processing`` with its first attempt ``started``
    (``confirm: true``): one statement, committed before any connector is called.

    Its ``payment.created`` event shows it as it was created
    (``requires_confirmation``), as a create then confirm would.

    Args:
      candidates: connectors to try, best first (from the routing policy).
      action_deadline_s: how long the payment may then wait in ``requires_action``.

    Raises:
      StateError: no connector can take the payment.
      NotFound, InvalidRequest: as :func:`create`.
    """
    if not candidates:
        raise StateError("No connector can take this payment.", code="no_connector")
    return await _insert(conn, merchant_id, spec, candidates, deadline_s, action_deadline_s)


_BEGIN_HEAD = f"""\
-- the payment: (still) processing, from the status and updated_at the read saw
upd AS (
  UPDATE payments SET status = 'processing', connector = $connector, updated_at = $now::timestamptz,
    processing_deadline = $now::timestamptz + make_interval(secs => $deadline_s::float8),
    return_url = COALESCE($return_url, return_url), next_action = NULL,
    -- counted from the first attempt; a fallback attempt keeps it
    action_deadline = CASE WHEN $action_deadline_s::float8 IS NULL THEN action_deadline
      ELSE $now::timestamptz + make_interval(secs => $action_deadline_s::float8) END
  WHERE id = $payment_id AND merchant_id = $merchant_id AND status = ANY($allowed::text[])
    AND updated_at = $seen_updated_at
  RETURNING id),
-- the attempt, started, if the payment moved
att AS (
  INSERT INTO payment_attempts (id, payment_id, merchant_id, connector, status, connector_account_id,
    created_at, updated_at)
  SELECT $attempt_id, $payment_id, $merchant_id, $connector, 'started', {_ACCOUNT_OF}, $now, $now FROM upd
  RETURNING connector_account_id)"""


_BEGIN = q(statement(_BEGIN_HEAD, None, _ATTEMPT_ACCOUNT))


@single_unit
async def begin_attempt(conn: asyncpg.Connection, merchant_id: str, payment_id: str, deadline_s: float,
                        *, route: Route | None = None, connector: str | None = None,
                        first: bool = True, return_url: str | None = None,
                        action_deadline_s: float = ACTION_DEADLINE_S) -> Begun:
    """Start a connector attempt: the payment goes (or stays) ``processing``.

    Two statements, no transaction: a read, then a write guarded by the status
    the read saw and its ``updated_at`` (another writer in between makes the
    guard fail, and the confirm is refused instead of racing). The first
    attempt moves ``requires_confirmation`` → ``processing``; a fallback
    attempt (``first=False``) requires the payment still ``processing``. No
    event is written here: ``processing`` becomes visible as an event only if
    the confirm ends there (see :func:`settle`).

    Args:
      route: pure function from the payment row and its merchant's routing to
        candidate connectors (used when ``connector`` is not given).
      return_url: where a customer action comes back to (given on confirm).
      action_deadline_s: how long the payment may wait in ``requires_action``
        (counted from the first attempt; a fallback attempt keeps it).

    Raises:
      NotFound, StateError.
    """
    loaded = await load(conn, merchant_id, payment_id)
    row = loaded.row
    if first:
        next_status(row["status"], Trigger.CONFIRM)
        allowed = sources(Trigger.CONFIRM)
    elif row["status"] != Status.PROCESSING.value:
        raise StateError(f"The payment is no longer processing (status {row['status']}).")
    else:
        allowed = [Status.PROCESSING.value]
    candidates = (connector,) if connector else tuple(route(row, loaded.routing) if route else ())
    if not candidates:
        raise StateError("No connector can take this payment.", code="no_connector")
    now, attempt_id = _now(), new_id("att")
    query = _BEGIN
    written = await conn.fetchrow(query.sql, *query.args({
        "payment_id": payment_id, "merchant_id": merchant_id, "connector": candidates[0], "now": now,
        "deadline_s": deadline_s, "allowed": allowed, "seen_updated_at": row["updated_at"], "attempt_id": attempt_id,
        "return_url": return_url, "action_deadline_s": action_deadline_s if first else None}))
    if not written["changed"]:
        raise StateError("The payment changed while confirming; retry.")
    if first:
        metrics.transition("payment", payment_id, row["status"], "processing", connector=candidates[0])
    row = {**row, "status": Status.PROCESSING.value, "connector": candidates[0], "updated_at": now,
           "return_url": return_url or row["return_url"], "next_action": None}
    attempt = {"id": attempt_id, "payment_id": payment_id, "merchant_id": merchant_id, "connector": candidates[0],
               "status": "started", "connector_txn_id": None, "error_code": None, "created_at": now,
               "updated_at": now, "connector_account_id": written["connector_account_id"]}
    return Begun(attempt_id, candidates[0], candidates, row, [*loaded.attempts, attempt])


def settle_head(also: Also | None = None) -> str:
    """The settle's own CTEs (:func:`settle_known`): the payment and its attempt,
    and ``also``'s write when given (the payment moves only if ``also``'s
    condition holds; the attempt and ``also`` only if the payment moved)."""
    condition = att_guard = also_cte = ""
    if also is not None:
        condition = f"\n    AND {also.condition}"
        att_guard = " AND EXISTS (SELECT 1 FROM upd)"
        also_cte = f",\n{also.cte}"
    return f"""\
-- the payment: moves only from the status and updated_at its caller read
upd AS (
  UPDATE payments SET status = $status, amount_received = $amount_received,
    amount_capturable = $amount_capturable, last_error = $last_error,
    -- a deadline only while an answer is still awaited
    processing_deadline = CASE WHEN $status IN ('processing', 'requires_action')
      THEN COALESCE(processing_deadline, $now) END,
    next_action = $next_action::jsonb, cancellation_reason = $cancellation_reason,
    -- the gateway's card brand and last 4
    payment_method = payment_method || $method_update::jsonb,
    updated_at = $now
  WHERE id = $payment_id AND status = $seen_status AND updated_at = $seen_updated_at{condition}
  RETURNING id),
-- the attempt: its answer, if it still awaits one
att AS (
  UPDATE payment_attempts SET status = $attempt_status,
    connector_txn_id = COALESCE($connector_txn_id, connector_txn_id),
    error_code = $error_code, latency_ms = COALESCE($latency_ms::float8, latency_ms), updated_at = $now
  WHERE id = $attempt_id AND status IN ('started', 'unknown'){att_guard}
  RETURNING id){also_cte}"""


def method_update(method: Mapping, details: object) -> dict:
    """What to merge into a stored payment method from a gateway's ``method_details``:
    ``{"card": {"brand", "last4"}}`` for a card the gateway described, else nothing."""
    card = public_card(details) if method.get("type") == "card" else None
    return {"card": card} if card else {}


@dataclasses.dataclass(frozen=True)
class Also:
    """Another write that must happen with a settle, and only with it.

    The inbox marks its row processed this way: the row must still be
    unprocessed for the payment to move, and is marked only if it moved.

    Attributes:
      condition: a boolean SQL expression the payment's update also requires.
      cte: a CTE named ``also`` that runs only if the payment was updated (it may read ``upd``).
      args: the named parameters of both (:mod:`storage.sql`), prefixed ``also_``.
    """

    condition: str
    cte: str
    args: dict[str, object]


async def settle_known(conn: asyncpg.Connection, row: Mapping, attempts: list, attempt_id: str,
                       outcome: Outcome, *, also: Also | None = None,
                       latency_ms: float | None = None, cancellation_reason: str | None = None) -> dict | None:
    """Record ``outcome`` for an attempt of a payment whose row and attempts the caller
    already read, and move the payment: one statement, no read.

    Guarded by the row's status (``processing`` or ``requires_action``, as
    read) and ``updated_at``: if anything moved the payment since it was
    read, nothing is written. ``next_action`` is set only in
    ``requires_action`` (a new one replaces it, none keeps it); the gateway's
    card brand and last 4 are merged into the payment method.

    Args:
      also: another write of the same statement that must happen with it, and
        only with it (:class:`Also`).
      latency_ms: how long the connector call took (None: no call of ours settled it).
      cancellation_reason: recorded if the outcome cancels the payment.

    Returns:
      The payment's API form after the change, or ``None`` if a guard failed.
    """
    current = row["status"]
    result = settle_outcome(row["amount"], outcome, current, cancellation_reason)
    now = _now()
    txn = outcome.connector_txn_id
    attempts = [{**a, "status": result.attempt_status, "error_code": outcome.error_code, "updated_at": now,
                 "connector_txn_id": txn or a["connector_txn_id"]}
                if a["id"] == attempt_id and a["status"] in ("started", "unknown") else a
                for a in attempts]
    next_action = None
    if result.status is Status.REQUIRES_ACTION:
        next_action = result.next_action or row.get("next_action")
    merge = method_update(row["payment_method"], outcome.method_details)
    after = {**row, "status": result.status.value, "amount_received": result.amount_received,
             "amount_capturable": result.amount_capturable, "last_error": result.last_error, "updated_at": now,
             "next_action": next_action, "cancellation_reason": result.cancellation_reason,
             "payment_method": {**row["payment_method"], **merge}}
    snapshot = render.payment(after, attempts)
    args = {"payment_id": row["id"], "attempt_id": attempt_id, "attempt_status": result.attempt_status,
            "connector_txn_id": txn, "error_code": outcome.error_code, "now": now, "status": result.status.value,
            "amount_received": result.amount_received, "amount_capturable": result.amount_capturable,
            "last_error": result.last_error, "seen_updated_at": row["updated_at"], "latency_ms": latency_ms,
            "next_action": next_action, "cancellation_reason": result.cancellation_reason, "method_update": merge,
            "seen_status": current}
    if also is not None:
        args.update(also.args)
    changed = await _write(conn, settle_head(also), args, after, result.status.value,
                           [payment_event(result.status.value, snapshot)], now)
    if not changed:
        return None
    metrics.transition("payment", row["id"], current, result.status.value, connector=row["connector"],
                       outcome=outcome.kind.value, error=outcome.error_code)
    return snapshot


@single_unit
async def settle_begun(conn: asyncpg.Connection, begun: Begun, outcome: Outcome,
                       latency_ms: float | None = None) -> dict:
    """Record a connector ``outcome`` for the attempt ``begun`` started, and move the payment.

    One statement (:func:`settle_known` with what ``begun`` knows). If anything
    moved the payment since (a webhook, reconciliation), this is a late
    answer: the payment is left as it is, the attempt recorded, and the
    payment read back.

    Returns:
      The payment's API form after the change.
    """
    snapshot = await settle_known(conn, begun.payment, begun.attempts, begun.attempt_id, outcome,
                                  latency_ms=latency_ms)
    if snapshot is not None:
        return snapshot
    async with _transaction(conn):
        return await settle(conn, begun.payment["merchant_id"], begun.payment["id"], begun.attempt_id, outcome,
                            latency_ms=latency_ms)


async def settle(conn: asyncpg.Connection, merchant_id: str, payment_id: str, attempt_id: str,
                 outcome: Outcome, *, final: bool = True, latency_ms: float | None = None,
                 cancellation_reason: str | None = None) -> dict:
    """Record a connector ``outcome`` for an attempt and move the payment (inside a transaction).

    For outcomes that arrive without the attempt's :class:`Begun` (a gateway
    webhook, reconciliation, a fallback's failed attempt). A payment that no
    longer awaits an answer (a late or duplicate one) is left as it is: a
    terminal status never changes; nor does an ``unknown`` answer move a
    payment waiting for its customer.

    Args:
      final: False when the confirm will fall back to another connector, so an
        ``unknown``/failed attempt must not move the payment yet.
      latency_ms: how long the connector call took (None when no call of ours
        settled it: a webhook, reconciliation).
      cancellation_reason: recorded if the outcome cancels the payment.

    Returns:
      The payment's API form after the change.
    """
    row = await fetch_row(conn, merchant_id, payment_id, lock=True)
    attempts = [dict(a) for a in await _attempts(conn, payment_id)]
    if final and row["status"] in AWAITING_ANSWER and moves(row["status"], outcome):
        snapshot = await settle_known(conn, dict(row), attempts, attempt_id, outcome, latency_ms=latency_ms,
                                      cancellation_reason=cancellation_reason)
        if snapshot is not None:  # the row is locked: its guard holds
            return snapshot
    if row["status"] in AWAITING_ANSWER and not moves(row["status"], outcome):
        return await _render(conn, row)  # an unanswered retrieve while the customer acts: nothing learnt
    kind = outcome.kind
    attempt_status = "failed" if not final and kind is OutcomeKind.UNKNOWN else {
        OutcomeKind.SUCCEEDED: "succeeded", OutcomeKind.AUTHORIZED: "authorized", OutcomeKind.DECLINED: "failed",
        OutcomeKind.UNKNOWN: "unknown", OutcomeKind.CANCELED: "failed"}.get(kind, "started")
    await conn.execute(
        "UPDATE payment_attempts SET status = $2, connector_txn_id = COALESCE($3, connector_txn_id),"
        " error_code = $4, latency_ms = COALESCE($5, latency_ms), updated_at = now()"
        " WHERE id = $1 AND status IN ('started', 'unknown')",
        attempt_id, attempt_status, outcome.connector_txn_id, outcome.error_code, latency_ms,
    )
    return await _render(conn, row)


# The operation claim the writer holds (None when it took none: a cancel before
# any authorisation) is still the payment's: a claim that lapsed while its
# holder was stopped and was taken by another request fences the late write
# out, whatever the status (see claim_operation).
_OPERATION_FENCE = ("operation IS NOT DISTINCT FROM $claimed_operation"
                    " AND operation_until IS NOT DISTINCT FROM $claimed_until")
_CAPTURE_HEAD = f"""\
-- the payment: captured for the amount, from the state its caller read, under its claim
upd AS (
  UPDATE payments SET status = $status, amount_received = $amount, amount_capturable = 0, updated_at = $now,
    operation = NULL, operation_until = NULL
  WHERE id = $payment_id AND merchant_id = $merchant_id AND status = ANY($allowed::text[])
    AND amount_capturable >= $amount AND updated_at = $seen_updated_at AND {_OPERATION_FENCE}
  RETURNING id),
-- the authorised attempt succeeded, if the payment moved
att AS (
  UPDATE payment_attempts SET status = 'succeeded', updated_at = $now
  WHERE payment_id = $payment_id AND status = 'authorized' AND EXISTS (SELECT 1 FROM upd))"""
_CANCEL_HEAD = f"""\
-- the payment: canceled, from the state its caller read, under its claim (if any)
upd AS (
  UPDATE payments SET status = $status, amount_capturable = 0, updated_at = $now,
    operation = NULL, operation_until = NULL, next_action = NULL, cancellation_reason = $reason
  WHERE id = $payment_id AND merchant_id = $merchant_id AND status = ANY($allowed::text[])
    AND updated_at = $seen_updated_at AND {_OPERATION_FENCE}
  RETURNING id),
-- its authorisation voided, an attempt waiting for its customer closed, if the payment moved
att AS (
  UPDATE payment_attempts SET status = 'failed', updated_at = $now,
    error_code = CASE WHEN status = 'authorized' THEN 'authorization_voided' ELSE 'payment_canceled' END
  WHERE payment_id = $payment_id AND status IN ('authorized', 'started', 'unknown') AND EXISTS (SELECT 1 FROM upd))"""


@single_unit
async def capture(conn: asyncpg.Connection, loaded: Loaded, amount: int) -> dict:
    """``requires_capture`` → ``succeeded`` for ``amount``; the rest is released.

    One statement, guarded by the state ``loaded`` saw.

    Raises:
      StateError: the payment is not (or no longer) capturable.
    """
    row = loaded.row
    status = next_status(row["status"], Trigger.CAPTURE).value
    now = _now()
    after = {**row, "status": status, "amount_received": amount, "amount_capturable": 0, "updated_at": now}
    attempts = [{**a, "status": "succeeded", "updated_at": now} if a["status"] == "authorized" else a
                for a in loaded.attempts]
    snapshot = render.payment(after, attempts)
    if not await _write(conn, _CAPTURE_HEAD, {
            "payment_id": row["id"], "merchant_id": row["merchant_id"], "status": status, "amount": amount,
            "now": now, "allowed": sources(Trigger.CAPTURE), "seen_updated_at": row["updated_at"], **_claim_of(row)},
                        after, status, [payment_event(status, snapshot)], now):
        _refuse(await load(conn, row["merchant_id"], row["id"]), Trigger.CAPTURE, "capturing")
    metrics.transition("payment", row["id"], row["status"], status, amount=amount)
    return snapshot


@single_unit
async def cancel(conn: asyncpg.Connection, loaded: Loaded, reason: str | None = None) -> dict:
    """``requires_confirmation``/``requires_capture``/``requires_action`` → ``canceled``;
    an authorisation is voided, an attempt waiting for its customer closed.

    One statement, guarded by the state ``loaded`` saw.

    Args:
      reason: the payment's ``cancellation_reason`` (``"abandoned"``), or None.

    Raises:
      StateError: the payment cannot be (or no longer be) canceled.
    """
    row = loaded.row
    status = next_status(row["status"], Trigger.CANCEL).value
    now = _now()
    after = {**row, "status": status, "amount_capturable": 0, "updated_at": now, "next_action": None,
             "cancellation_reason": reason}
    codes = {"authorized": "authorization_voided", "started": "payment_canceled", "unknown": "payment_canceled"}
    attempts = [{**a, "status": "failed", "error_code": codes[a["status"]], "updated_at": now}
                if a["status"] in codes else a for a in loaded.attempts]
    snapshot = render.payment(after, attempts)
    if not await _write(conn, _CANCEL_HEAD, {
            "payment_id": row["id"], "merchant_id": row["merchant_id"], "status": status, "now": now,
            "allowed": sources(Trigger.CANCEL), "seen_updated_at": row["updated_at"], "reason": reason,
            **_claim_of(row)},
                        after, status, [payment_event(status, snapshot)], now):
        _refuse(await load(conn, row["merchant_id"], row["id"]), Trigger.CANCEL, "canceling")
    metrics.transition("payment", row["id"], row["status"], status)
    return snapshot


def _claim_of(row: Mapping) -> dict[str, object]:
    """The operation claim a writer holds, as :data:`_OPERATION_FENCE` compares it."""
    return {"claimed_operation": row.get("operation"), "claimed_until": row.get("operation_until")}


@single_unit
async def claim_operation(conn: asyncpg.Connection, loaded: Loaded, trigger: Trigger, hold_s: float) -> Loaded:
    """Reserve the payment for one connector operation (capture or void) before
    the connector is called, so that of several processes racing on one payment
    exactly one reaches the gateway.

    One statement, guarded by the state ``loaded`` saw. The claim lapses after
    ``hold_s`` (longer than the connector timeout): a process killed during the
    call does not hold the payment for ever. :func:`capture` and :func:`cancel`
    clear it; :func:`release_operation` gives it back when the call failed.

    The claim's end (``operation_until``) is its fencing token: the write that
    follows the call must come with the returned :class:`Loaded`, and is
    refused once another request took the claim over (this holder was stopped
    past ``hold_s``), even when that one has not written yet.

    Returns:
      ``loaded`` holding the claim, for the capture or cancel that follows.

    Raises:
      StateError: the payment cannot take ``trigger`` any more, or another
        request holds the payment for its own operation.
    """
    row = loaded.row
    until = await conn.fetchval(
        "UPDATE payments SET operation = $3, operation_until = now() + make_interval(secs => $4)"
        " WHERE id = $1 AND merchant_id = $2 AND status = ANY($5::text[]) AND updated_at = $6"
        " AND (operation IS NULL OR operation_until < now()) RETURNING operation_until",
        row["id"], row["merchant_id"], trigger.value, hold_s, sources(trigger), row["updated_at"],
    )
    if until is None:
        current = await load(conn, row["merchant_id"], row["id"])
        _refuse(current, trigger, f"another request held it for a {trigger.value}")
    return dataclasses.replace(loaded, row={**row, "operation": trigger.value, "operation_until": until})


@single_unit
async def release_operation(conn: asyncpg.Connection, loaded: Loaded, trigger: Trigger) -> None:
    """Give back a claim whose connector call failed (the payment did not move).

    Args:
      loaded: as :func:`claim_operation` returned it: a claim taken over since is not given back.
    """
    await conn.execute("UPDATE payments SET operation = NULL, operation_until = NULL"
                       " WHERE id = $1 AND merchant_id = $2 AND operation = $3 AND operation_until = $4",
                       loaded.row["id"], loaded.row["merchant_id"], trigger.value, loaded.row.get("operation_until"))


def _refuse(current: Loaded, trigger: Trigger, doing: str) -> None:
    """Raise why a guarded write did not match: the precise transition error, or "changed, retry"."""
    next_status(current.row["status"], trigger)
    raise StateError(f"The payment changed while {doing}; retry.")


async def flag_for_review(conn: asyncpg.Connection, payment_id: str, last_error: dict | None = None) -> dict | None:
    """Set ``review_required`` (once) and write ``payment.review_required`` (inside a transaction).

    Args:
      last_error: replaces the payment's ``last_error`` when given (why it needs a person).

    Returns:
      The payment's API form if it was flagged now, None if it already was.
    """
    row = await conn.fetchrow(
        "UPDATE payments SET review_required = true, last_error = COALESCE($2::jsonb, last_error), updated_at = now()"
        " WHERE id = $1 AND NOT review_required RETURNING *", payment_id, last_error)
    if row is None:
        return None
    return await _commit_events(conn, row, "review_required")


@single_unit
async def get(conn: asyncpg.Connection, merchant_id: str, payment_id: str) -> dict:
    return (await load(conn, merchant_id, payment_id)).snapshot


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


