"""Outgoing webhook deliveries: rows, not timers.

A delivery row per (endpoint, event) is written by a projection of the event
log, inside the transaction that writes the event (so every committed event
has its deliveries, and nothing is sent for a rolled-back one). The
dispatcher claims due rows with ``FOR UPDATE SKIP LOCKED`` and a lease, so
several processes share the work, and a process that dies mid-send leaves
rows that are taken over when their lease ends (at-least-once delivery).
"""

from __future__ import annotations

import secrets

import asyncpg

from domain import outgoing_webhooks as rules
from domain import render
from domain.errors import EndpointDisabled, NotFound
from storage import webhook_endpoints
from storage.pagination import page_rows

# Long enough for a send to wait for its endpoint's slot (at most one timeout),
# make its attempt (one timeout) and record it, with margin.
LEASE_S = 3 * rules.TIMEOUT_S


# The retry schedule (``PAYCAST_WEBHOOK_RETRY_SCHEDULE``: seconds before each
# attempt) reaches the SQL that writes deliveries as two settings of the
# database session, set by :class:`storage.database.Database` from
# :func:`session_settings`: the appending statement runs in every unit of
# work that writes events, and the session is what they all share.
MAX_ATTEMPTS_SETTING = "paycast.webhook_max_attempts"
FIRST_DELAY_SETTING = "paycast.webhook_first_delay_s"


def session_settings(schedule: list[int]) -> dict[str, str]:
    """The session settings that carry ``schedule`` to :func:`projection_cte`."""
    return {MAX_ATTEMPTS_SETTING: str(len(schedule)), FIRST_DELAY_SETTING: str(schedule[0])}


def projection_cte(events_cte: str, merchant: str) -> str:
    """The event log's delivery projection, as a CTE of the appending statement.

    One pending delivery per (event of ``events_cte``, enabled endpoint of the
    merchant that wants it), so every committed event has its deliveries and a
    rolled-back one has none. Which endpoint wants which event is
    :func:`domain.outgoing_webhooks.matches`: the wildcard or the exact type
    (parameter ``$wd_wildcard``, :func:`projection_args`). How many attempts a
    delivery gets and when its first is due come from the session
    (:func:`session_settings`).

    Args:
      merchant: the SQL of the merchant's id (a named parameter of the statement).
    """
    attempts = f"current_setting('{MAX_ATTEMPTS_SETTING}')::int"
    delay = f"current_setting('{FIRST_DELAY_SETTING}')::float8"
    return (
        "-- one outgoing webhook delivery per event and enabled endpoint that wants it\n"
        "deliveries AS (\n"
        "  INSERT INTO webhook_deliveries (id, merchant_id, endpoint_id, event_id, event_type, status,\n"
        "    max_attempts, next_attempt_at)\n"
        f"  SELECT paycast_new_id('wd'), {merchant}, ep.id, ev.id, ev.type, 'pending', {attempts},\n"
        f"    now() + make_interval(secs => {delay})\n"
        f"  FROM {events_cte} ev JOIN webhook_endpoints ep ON ep.merchant_id = {merchant} AND ep.status = 'enabled'\n"
        "    AND ep.deleted_at IS NULL AND ($wd_wildcard::text = ANY(ep.enabled_events)\n"
        "    OR ev.type = ANY(ep.enabled_events)))"
    )


def projection_args() -> dict[str, object]:
    """The named parameters of :func:`projection_cte`."""
    return {"wd_wildcard": rules.WILDCARD}


async def claim(conn: asyncpg.Connection, limit: int, per_endpoint: int, busy_endpoints: list[str]) -> list[dict]:
    """Lease up to ``limit`` due deliveries, at most ``per_endpoint`` per endpoint,
    none for ``busy_endpoints`` (already at their concurrency in this process).

    Returns:
      Everything one attempt needs: delivery, endpoint url/secret, the event,
      and the claim token that must come back with the result.
    """
    token = secrets.token_hex(8)
    rows = await conn.fetch(
        "WITH due AS ("
        "  SELECT d.id, d.endpoint_id, d.next_attempt_at FROM webhook_deliveries d"
        "  WHERE d.status = 'pending' AND d.next_attempt_at <= now()"
        "    AND (d.claimed_until IS NULL OR d.claimed_until < now()) AND d.endpoint_id <> ALL($3::text[])"
        "    AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND e.status = 'enabled'"
        "                AND e.deleted_at IS NULL)"
        "  ORDER BY d.next_attempt_at LIMIT $1 * 4 FOR UPDATE SKIP LOCKED"
        "), capped AS ("
        "  SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY endpoint_id ORDER BY next_attempt_at, id) AS n"
        "                  FROM due) ranked WHERE n <= $2 LIMIT $1"
        ")"
        " UPDATE webhook_deliveries d SET claimed_until = now() + make_interval(secs => $4), claim_token = $5"
        " FROM capped WHERE d.id = capped.id"
        " RETURNING d.id, d.endpoint_id, d.event_id, d.attempt_count",
        limit, per_endpoint, busy_endpoints, LEASE_S, token,
    )
    if not rows:
        return []
    details = await conn.fetch(
        "SELECT e.id AS endpoint_id, e.url, e.secret FROM webhook_endpoints e"
        " WHERE e.id = ANY($1::text[])", list({r["endpoint_id"] for r in rows}),
    )
    endpoints = {d["endpoint_id"]: d for d in details}
    events = {e["id"]: e for e in await conn.fetch("SELECT * FROM events WHERE id = ANY($1::text[])",
                                                    list({r["event_id"] for r in rows}))}
    gone = [r["id"] for r in rows if r["event_id"] not in events]
    if gone:
        # The event's partition was dropped (PAYCAST_RETENTION_EVENTS_DAYS): nothing left to send.
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'canceled', claimed_until = NULL, claim_token = NULL,"
            " last_error = 'the event is past its retention', updated_at = now() WHERE id = ANY($1::text[])", gone,
        )
        rows = [r for r in rows if r["event_id"] in events]
    return [{"id": r["id"], "endpoint_id": r["endpoint_id"], "url": endpoints[r["endpoint_id"]]["url"],
             "secret": endpoints[r["endpoint_id"]]["secret"], "attempt": r["attempt_count"] + 1,
             "event": render.event(events[r["event_id"]]), "token": token,
             "traceparent": events[r["event_id"]].get("traceparent")} for r in rows]


async def record_attempt(conn: asyncpg.Connection, delivery_id: str, token: str, status_code: int | None,
                         latency_ms: int, error: str | None, schedule: list[int]) -> str:
    """Log one attempt and decide what comes next (done, retry later, give up,
    disable the endpoint on 410).

    Args:
      schedule: the retry schedule (seconds before each attempt).

    The attempt is always logged; the delivery moves only if this process
    still holds its claim (otherwise another process owns it now).

    Returns:
      The delivery's status after the attempt.
    """
    row = await conn.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1 FOR UPDATE", delivery_id)
    attempt = row["attempt_count"] + 1
    await conn.execute(
        "INSERT INTO webhook_attempts (delivery_id, attempt, status_code, latency_ms, error) VALUES ($1, $2, $3, $4, $5)",
        delivery_id, attempt, status_code, latency_ms, error[:1000] if error else None,
    )
    if row["status"] != "pending" or row["claim_token"] != token:
        # Canceled, or our lease ran out and another process took it: only log.
        return row["status"]
    verdict = rules.verdict(status_code)
    last = {"last_status_code": status_code, "last_error": error[:1000] if error else None}
    if verdict is rules.Verdict.SUCCEEDED:
        await _finish(conn, delivery_id, attempt, "succeeded", None, **last)
        return "succeeded"
    if verdict is rules.Verdict.DISABLE:
        await _finish(conn, delivery_id, attempt, "failed", None, **last)
        await webhook_endpoints.disable(conn, row["endpoint_id"], "the endpoint answered 410 Gone")
        return "failed"
    step = rules.after_failure(attempt, row["max_attempts"], schedule)
    if step.delay_s is None:
        await _finish(conn, delivery_id, attempt, "failed", None, **last)
        return "failed"
    await _finish(conn, delivery_id, attempt, "pending", step.delay_s, **last)
    return "pending"


async def _finish(conn: asyncpg.Connection, delivery_id: str, attempt: int, status: str, delay_s: int | None,
                  last_status_code: int | None, last_error: str | None) -> None:
    await conn.execute(
        "UPDATE webhook_deliveries SET status = $2, attempt_count = $3, claimed_until = NULL, claim_token = NULL,"
        " next_attempt_at = CASE WHEN $4::integer IS NULL THEN NULL ELSE now() + make_interval(secs => $4) END,"
        " last_status_code = $5, last_error = $6,"
        " delivered_at = CASE WHEN $2 = 'succeeded' THEN now() ELSE delivered_at END, updated_at = now()"
        " WHERE id = $1", delivery_id, status, attempt, delay_s, last_status_code, last_error,
    )


async def _with_attempts(conn: asyncpg.Connection, rows: list) -> list[dict]:
    by_delivery: dict[str, list] = {r["id"]: [] for r in rows}
    if rows:
        for a in await conn.fetch("SELECT * FROM webhook_attempts WHERE delivery_id = ANY($1::text[]) ORDER BY id",
                                  list(by_delivery)):
            by_delivery[a["delivery_id"]].append(a)
    return [render.webhook_delivery(r, by_delivery[r["id"]]) for r in rows]


async def list_page(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str, *, limit: int,
                    starting_after: str | None, filters: dict[str, str | None]) -> tuple[list[dict], bool]:
    """The endpoint's deliveries, newest first, each with its attempts."""
    row = await conn.fetchrow("SELECT id FROM webhook_endpoints WHERE id = $1 AND merchant_id = $2",
                              endpoint_id, merchant_id)
    if row is None:
        raise NotFound(f"No such webhook endpoint: '{endpoint_id}'", param="id")
    rows, more = await page_rows(conn, "webhook_deliveries", merchant_id, limit=limit, starting_after=starting_after,
                                 filters={"endpoint_id": endpoint_id, **filters})
    return await _with_attempts(conn, rows), more


async def retry(conn: asyncpg.Connection, merchant_id: str, endpoint_id: str, delivery_id: str) -> dict:
    """Send a delivery again now (whatever its status), one attempt more than it had left.

    Raises:
      NotFound: no such endpoint or delivery for this merchant.
      EndpointDisabled: the endpoint is disabled.
    """
    endpoint = await webhook_endpoints.fetch_row(conn, merchant_id, endpoint_id)
    row = await conn.fetchrow(
        "SELECT * FROM webhook_deliveries WHERE id = $1 AND endpoint_id = $2 AND merchant_id = $3 FOR UPDATE",
        delivery_id, endpoint_id, merchant_id,
    )
    if row is None:
        raise NotFound(f"No such webhook delivery: '{delivery_id}'", param="id")
    if endpoint["status"] != "enabled":
        raise EndpointDisabled("The webhook endpoint is disabled; deliveries to it cannot be retried.")
    row = await conn.fetchrow(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(),"
        " max_attempts = GREATEST(max_attempts, attempt_count + 1),"
        # An attempt in flight keeps its claim; anything else becomes claimable now.
        " claimed_until = CASE WHEN status = 'pending' THEN claimed_until END,"
        " claim_token = CASE WHEN status = 'pending' THEN claim_token END,"
        " updated_at = now() WHERE id = $1 RETURNING *", delivery_id,
    )
    return (await _with_attempts(conn, [row]))[0]


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM webhook_deliveries GROUP BY status")
    return {r["status"]: r["n"] for r in rows}
