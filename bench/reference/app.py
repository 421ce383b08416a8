"""The reference service: what a team would otherwise write, FastAPI + uvicorn + asyncpg, one worker.

It does what Paycast's hot path does, with the same rows and guarantees, written the
plain way (a transaction of a few statements per step), so `make bench` can report
Paycast's numbers as a ratio to it in the same run, on the same PostgreSQL:

- ``POST /v1/payments``: the payment row and its ``payment.created`` event (per-merchant
  gap-free ``seq`` from ``merchants.event_seq``) in one transaction. With
  ``"confirm": true`` it then confirms, as below.
- ``POST /v1/payments/{id}/confirm`` (``Idempotency-Key`` optional): claim the key;
  transaction 1 locks the payment (``SELECT … FOR UPDATE``), checks its status, moves it
  to ``processing`` and inserts the ``started`` attempt (the intent is committed before
  the connector is called); the simulated connector answers (card ``4242…`` succeeds,
  ``4000000000000002`` is declined, anything else stays ``processing``); transaction 2
  settles the attempt and the payment, appends the event and stores the response under
  the idempotency key. A completed key replays its stored response.
- ``POST /webhooks/mockstripe``: ``Stripe-Signature`` verified (HMAC-SHA256, 300 s
  tolerance), the raw event inserted into ``webhook_inbox`` (unique on connector + event
  id) before the 200; a duplicate is answered 200 ``"duplicate": true``. Nothing
  processes the inbox: this measures "stored", as Paycast's ingest does (``--role api``).
  With ``?apply=1`` the same transaction also applies a new ``payment_intent.succeeded``
  (the payment ``processing`` → ``succeeded``, its attempt settled, the event appended,
  the row marked processed): what Paycast's ``--role all`` does for the same webhook,
  written the plain way, in the request.
- ``GET /ping``: the bare route. ``GET /stats``: database round trips so far (every
  statement, BEGIN, COMMIT and the pool's reset on release), for round trips per payment.

Authentication: ``Authorization: Bearer <key>``; the key's SHA-256 is looked up once and
cached in memory.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import json
import os
import pathlib
import secrets
import time
from typing import Literal

import asyncpg
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

SCHEMA = pathlib.Path(__file__).with_name("schema.sql")
SIGNATURE_TOLERANCE_S = 300
CONNECTOR = "mockstripe"


class Card(BaseModel):
    number: str = Field(min_length=12, max_length=19)


class Upi(BaseModel):
    vpa: str


class PaymentMethod(BaseModel):
    type: Literal["card", "upi", "netbanking", "wallet"]
    card: Card | None = None
    upi: Upi | None = None


class PaymentIn(BaseModel):
    amount: int = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    payment_method: PaymentMethod
    capture_method: Literal["automatic", "manual"] = "automatic"
    customer_id: str | None = None
    confirm: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)


class Stats:
    """Round trips to PostgreSQL since start (a plain counter: one worker, one event loop)."""

    round_trips = 0


class Counted:
    """A connection whose every statement counts as one round trip."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetchrow(self, sql: str, *args):
        Stats.round_trips += 1
        return await self._conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args):
        Stats.round_trips += 1
        return await self._conn.fetchval(sql, *args)

    async def fetch(self, sql: str, *args):
        Stats.round_trips += 1
        return await self._conn.fetch(sql, *args)

    async def execute(self, sql: str, *args):
        Stats.round_trips += 1
        return await self._conn.execute(sql, *args)


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool):
    """A pooled connection; its release runs asyncpg's reset query (one more round trip)."""
    async with pool.acquire() as conn:
        yield Counted(conn)
    Stats.round_trips += 1


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool):
    """BEGIN … COMMIT (or ROLLBACK on error) on a pooled connection: two more round trips."""
    async with pool.acquire() as conn:
        Stats.round_trips += 1
        try:
            async with conn.transaction():
                yield Counted(conn)
        finally:
            Stats.round_trips += 2  # COMMIT / ROLLBACK, and the pool's reset on release


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def iso(ts: datetime.datetime) -> str:
    return ts.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def render(row, attempts) -> dict:
    """The payment's API form (the fields Paycast renders for the hot path)."""
    return {
        "id": row["id"], "object": "payment", "amount": row["amount"], "currency": row["currency"],
        "status": row["status"], "capture_method": row["capture_method"],
        "amount_capturable": row["amount_capturable"], "amount_received": row["amount_received"],
        "amount_refunded": 0, "customer_id": row["customer_id"], "connector": row["connector"],
        "metadata": json.loads(row["metadata"]) if isinstance(row["metadata"], str) else row["metadata"],
        "attempts": [{"id": a["id"], "connector": a["connector"], "status": a["status"],
                      "connector_txn_id": a["connector_txn_id"], "error_code": a["error_code"],
                      "created_at": iso(a["created_at"])} for a in attempts],
        "created_at": iso(row["created_at"]), "updated_at": iso(row["updated_at"]),
    }


async def append_event(q: Counted, merchant_id: str, type_: str, snapshot: dict) -> None:
    """The event row with the merchant's next gap-free ``seq``, in one statement.

    Bumping ``merchants.event_seq`` locks the merchant's row until COMMIT, so every
    caller runs this as the last statement of its transaction: the lock is held for
    the commit only.
    """
    await q.execute(
        "WITH s AS (UPDATE merchants SET event_seq = event_seq + 1 WHERE id = $2 RETURNING event_seq)"
        " INSERT INTO events (id, merchant_id, seq, type, object_id, data)"
        " SELECT $1::text, $2::text, s.event_seq, $3::text, $4::text, $5::jsonb FROM s",
        new_id("evt"), merchant_id, type_, snapshot["id"], {"object": snapshot})


async def apply_succeeded(q: Counted, charge: dict) -> None:
    """A gateway's "succeeded" for a ``processing`` payment, as the last statements of the webhook's transaction.

    A late outcome (the payment already settled) or an unknown payment changes nothing.
    """
    payment_id = (charge.get("metadata") or {}).get("payment_id")
    row = await q.fetchrow("UPDATE payments SET status = 'succeeded', amount_received = amount, updated_at = now()"
                           " WHERE id = $1 AND status = 'processing' RETURNING *", payment_id)
    if row is None:
        return
    await q.execute("UPDATE payment_attempts SET status = 'succeeded', updated_at = now()"
                    " WHERE payment_id = $1 AND connector_txn_id = $2", payment_id, charge.get("id"))
    attempts = await q.fetch("SELECT * FROM payment_attempts WHERE payment_id = $1 ORDER BY id", payment_id)
    await append_event(q, row["merchant_id"], "payment.succeeded", render(row, attempts))  # last: see append_event


def simulated_connector(payment_method: dict) -> tuple[str, str | None, str | None]:
    """(attempt status, connector txn id, error code), as Paycast's in-process simulator answers a card."""
    number = (payment_method.get("card") or {}).get("number")
    if number == "4000000000000002":
        return "failed", new_id("ch"), "card_declined"
    if payment_method.get("type") == "card":
        return "succeeded", new_id("ch"), None
    return "started", new_id("ch"), None  # stays processing until a webhook (not modelled here)


def error(status: int, type_: str, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "code": code, "message": message, "param": None}}, status)


def create_app(dsn: str, api_keys: list[str], webhook_secret: str, pool_size: int = 10,
               on_ready=lambda: None) -> FastAPI:
    """The reference app on database ``dsn``; ``api_keys[i]`` is merchant ``mer_reference_<i>``'s key.

    Args:
      on_ready: called once the pool is open and the schema applied (the launcher
        prints its "listening" line then).
    """
    merchants_by_key: dict[str, str] = {}
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size,
                                         init=lambda c: c.set_type_codec("jsonb", encoder=json.dumps,
                                                                         decoder=json.loads, schema="pg_catalog"))
        async with pool.acquire() as conn:
            await conn.execute(SCHEMA.read_text())
            await conn.executemany("INSERT INTO merchants (id, api_key_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                                   [(f"mer_reference_{i}", hashlib.sha256(key.encode()).hexdigest())
                                    for i, key in enumerate(api_keys)])
        state["pool"] = pool
        on_ready()
        yield
        await pool.close()

    app = FastAPI(title="Paycast bench reference", lifespan=lifespan)

    async def merchant(authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "missing API key")
        key_hash = hashlib.sha256(authorization[7:].encode()).hexdigest()
        merchant_id = merchants_by_key.get(key_hash)
        if merchant_id is None:
            async with connection(state["pool"]) as q:
                merchant_id = await q.fetchval("SELECT id FROM merchants WHERE api_key_hash = $1", key_hash)
            if merchant_id is None:
                raise HTTPException(401, "invalid API key")
            merchants_by_key[key_hash] = merchant_id
        return merchant_id

    async def confirm(merchant_id: str, payment_id: str, idem_key: str | None = None) -> tuple[int, dict]:
        pool = state["pool"]
        async with transaction(pool) as q:
            row = await q.fetchrow("SELECT * FROM payments WHERE id = $1 AND merchant_id = $2 FOR UPDATE",
                                   payment_id, merchant_id)
            if row is None:
                return 404, {"error": {"type": "invalid_request_error", "code": "not_found",
                                       "message": "No such payment.", "param": None}}
            if row["status"] != "requires_confirmation":
                return 409, {"error": {"type": "state_error", "code": "payment_unexpected_state",
                                       "message": f"The payment is {row['status']}.", "param": None}}
            await q.execute("UPDATE payments SET status = 'processing', connector = $2, updated_at = now()"
                            " WHERE id = $1", payment_id, CONNECTOR)
            attempt_id = new_id("att")
            await q.execute("INSERT INTO payment_attempts (id, payment_id, merchant_id, connector, status)"
                            " VALUES ($1, $2, $3, $4, 'started')", attempt_id, payment_id, merchant_id, CONNECTOR)
        status, txn_id, error_code = simulated_connector(row["payment_method"])
        async with transaction(pool) as q:
            await q.execute("UPDATE payment_attempts SET status = $2, connector_txn_id = $3, error_code = $4,"
                            " updated_at = now() WHERE id = $1", attempt_id, status, txn_id, error_code)
            if status == "started":
                new_status, received = "processing", 0
            else:
                new_status, received = status, row["amount"] if status == "succeeded" else 0
            row = await q.fetchrow("UPDATE payments SET status = $2, amount_received = $3, updated_at = now()"
                                   " WHERE id = $1 AND status = 'processing' RETURNING *",
                                   payment_id, new_status, received)
            attempts = await q.fetch("SELECT * FROM payment_attempts WHERE payment_id = $1 ORDER BY id", payment_id)
            snapshot = render(row, attempts)
            if idem_key is not None:
                await q.execute("UPDATE idempotency_keys SET response_status = 200, response_body = $3"
                                " WHERE merchant_id = $1 AND key = $2", merchant_id, idem_key, json.dumps(snapshot))
            await append_event(q, merchant_id, f"payment.{new_status}", snapshot)  # last: see append_event
        return 200, snapshot

    @app.get("/ping")
    async def ping():
        return {"status": "ok"}

    @app.get("/stats")
    async def stats():
        return {"round_trips": Stats.round_trips, "pid": os.getpid()}

    @app.post("/v1/payments", status_code=201)
    async def create_payment(body: PaymentIn, authorization: str | None = Header(None)):
        merchant_id = await merchant(authorization)
        async with transaction(state["pool"]) as q:
            row = await q.fetchrow(
                "INSERT INTO payments (id, merchant_id, amount, currency, status, capture_method, payment_method,"
                " customer_id, metadata) VALUES ($1, $2, $3, $4, 'requires_confirmation', $5, $6, $7, $8)"
                " RETURNING *", new_id("pay"), merchant_id, body.amount, body.currency, body.capture_method,
                body.payment_method.model_dump(exclude_none=True), body.customer_id, body.metadata)
            snapshot = render(row, [])
            await append_event(q, merchant_id, "payment.created", snapshot)
        if body.confirm:
            status, snapshot = await confirm(merchant_id, snapshot["id"])
            if status != 200:
                return JSONResponse(snapshot, status)
        return snapshot

    @app.post("/v1/payments/{payment_id}/confirm")
    async def confirm_payment(payment_id: str, request: Request, authorization: str | None = Header(None),
                              idempotency_key: str | None = Header(None, max_length=255)):
        merchant_id = await merchant(authorization)
        if idempotency_key is not None:
            request_hash = hashlib.sha256(b"POST " + request.url.path.encode() + b"\n" + await request.body()
                                          ).hexdigest()
            async with connection(state["pool"]) as q:
                claimed = await q.fetchval(
                    "INSERT INTO idempotency_keys (merchant_id, key, request_hash) VALUES ($1, $2, $3)"
                    " ON CONFLICT (merchant_id, key) DO NOTHING RETURNING true",
                    merchant_id, idempotency_key, request_hash)
                if not claimed:
                    stored = await q.fetchrow("SELECT * FROM idempotency_keys WHERE merchant_id = $1 AND key = $2",
                                              merchant_id, idempotency_key)
                    if stored["request_hash"] != request_hash:
                        return error(422, "idempotency_error", "idempotency_key_reused", "Key reused.")
                    if stored["response_status"] is None:
                        return error(409, "idempotency_error", "idempotency_key_in_use", "Key in use.")
                    return Response(stored["response_body"], stored["response_status"],
                                    media_type="application/json", headers={"Idempotent-Replayed": "true"})
        status, body = await confirm(merchant_id, payment_id, idempotency_key)
        return JSONResponse(body, status)

    @app.post("/webhooks/{connector}")
    async def webhook(connector: str, request: Request, stripe_signature: str | None = Header(None),
                      apply: bool = False):
        if connector != CONNECTOR:
            return error(404, "invalid_request_error", "not_found", "Unknown connector.")
        raw = await request.body()
        if not verify_stripe(webhook_secret, raw, stripe_signature, int(time.time())):
            return error(400, "invalid_request_error", "signature_invalid", "Bad signature.")
        try:
            event = json.loads(raw)
            event_id, event_type = str(event["id"]), str(event["type"])
        except (ValueError, KeyError, TypeError):
            return error(400, "invalid_request_error", "invalid_json", "Bad event.")
        if not apply:
            async with connection(state["pool"]) as q:
                inserted = await q.fetchval(
                    "INSERT INTO webhook_inbox (id, connector, event_id, event_type, payload)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (connector, event_id) DO NOTHING RETURNING true",
                    new_id("whi"), connector, event_id, event_type, event)
            return {"received": True, "duplicate": not inserted}
        async with transaction(state["pool"]) as q:
            inserted = await q.fetchval(
                "INSERT INTO webhook_inbox (id, connector, event_id, event_type, payload, processed_at)"
                " VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (connector, event_id) DO NOTHING RETURNING true",
                new_id("whi"), connector, event_id, event_type, event)
            if inserted and event_type == "payment_intent.succeeded":
                await apply_succeeded(q, event["data"]["object"])
        return {"received": True, "duplicate": not inserted}

    return app


def verify_stripe(secret: str, body: bytes, header: str | None, now: int) -> bool:
    """``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`` within the tolerance."""
    if not header:
        return False
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    timestamps = [v for k, v in parts if k.strip() == "t"]
    if not timestamps or not timestamps[0].isdigit() or abs(now - int(timestamps[0])) > SIGNATURE_TOLERANCE_S:
        return False
    expected = hmac.new(secret.encode(), timestamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(k.strip() == "v1" and hmac.compare_digest(v.strip(), expected) for k, v in parts)
