"""``POST /webhooks/{connector}`` and ``POST /webhooks/{connector}/{mca_id}``: gateway webhooks in.

Verify the signature first (a forged body is never parsed or stored), parse,
then store durably through the group-commit writer; 200 only after commit.
:func:`ingest` (simulators, one process-wide secret each) and
:func:`ingest_for_account` (real connectors: the account's own webhook
secret, the connector module's pure verifier and parser) are the whole of
it; :mod:`app.webhooks_endpoint` serves both.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from quart import Blueprint, request

from app.body import Headers, json_response, read_raw
from app.context import components
from components import Components
from components.connector_accounts import WebhookTarget
from domain import razorpay_events, signatures, stripe_events, webhooks
from domain.errors import InvalidRequest, NotFound
from domain.ids import has_prefix
from telemetry import metrics

log = logging.getLogger("paycast.webhooks.in")

bp = Blueprint("webhooks", __name__)
# Each real connector's pure webhook module: ``verify(secret, raw, headers, now)``
# (raises domain.signatures.SignatureError) and ``parse(raw, headers) -> GatewayEvent``.
EVENT_MODULES = {"stripe": stripe_events, "razorpay": razorpay_events}


def _verify(connector: str, secret: str, raw: bytes, now: int, headers: Headers) -> None:
    if webhooks.FORMATS[connector] == "stripe":
        _checked(connector, signatures.verify_stripe, secret, raw, headers.get("Stripe-Signature"), now)
    else:
        _checked(connector, signatures.verify_razorpay, secret, raw, headers.get("X-Razorpay-Signature"))


def _checked(connector: str, verify, *args) -> None:
    """Run a signature check; a failure is counted, logged (its code only) and a 400."""
    try:
        verify(*args)
    except signatures.SignatureError as exc:
        metrics.SIGNATURE_FAILURES.labels(connector, exc.code).inc()
        log.warning("webhook refused: %s signature %s", connector, exc.code)
        raise InvalidRequest(str(exc), code=exc.code) from None


async def ingest(system: Components, connector: str, raw: bytes, headers: Headers) -> dict:
    """Verify, parse and durably store one gateway webhook.

    Args:
      system: the process's components.
      headers: the request's headers (``.get(name)``, case-insensitive).

    Returns:
      The 200 body: ``{"received": true, "duplicate": bool}``.

    Raises:
      NotFound: not a connector of ours.
      InvalidRequest: a bad or stale signature, or a body that is not the connector's webhook.
      Unavailable: not stored in time (the gateway should retry).
    """
    if connector not in webhooks.FORMATS:
        raise NotFound(f"Unknown connector {connector!r}.", param="connector")
    now = int(time.time())
    _verify(connector, system.settings.secrets_by_connector[connector], raw, now, headers)
    event = webhooks.parse(connector, raw)
    if webhooks.FORMATS[connector] == "razorpay" and abs(now - event.created) > signatures.TOLERANCE_S:
        # Razorpay signs only the body; its created_at is what bounds a replay.
        metrics.SIGNATURE_FAILURES.labels(connector, "stale_signature").inc()
        raise InvalidRequest("The webhook is older than the tolerance.", code="stale_signature")
    return await _store(system, event, raw)


async def ingest_for_account(system: Components, connector: str, account_id: str, raw: bytes,
                             headers: Headers) -> dict:
    """Verify with the account's webhook secret, parse, and durably store one real-connector webhook.

    The account may be disabled: its in-flight payments still settle by webhook.
    The event carries ``account_id``, so it moves only that account's payments.

    Returns:
      The 200 body: ``{"received": true, "duplicate": bool}``.

    Raises:
      NotFound: not a real connector, or no such account of that connector.
      InvalidRequest: a bad or stale signature, or a body that is not the connector's webhook.
      Unavailable: not stored in time (the gateway should retry).
    """
    events = EVENT_MODULES.get(connector)
    if events is None or not has_prefix(account_id, "mca"):  # no database read for what cannot be an account
        raise NotFound(f"No {connector} webhooks are received at this path.", param="connector_account")
    now = int(time.time())
    target = await _target(system, connector, account_id)
    try:
        events.verify(target.secret, raw, headers, now)
    except signatures.SignatureError:
        # Maybe signed with a secret rotated by another process since this one cached it.
        target = await _target(system, connector, account_id, fresh=True)
        _checked(connector, events.verify, target.secret, raw, headers, now)
    event = dataclasses.replace(events.parse(raw, headers), account_id=account_id)
    return await _store(system, event, raw)


async def _target(system: Components, connector: str, account_id: str, *, fresh: bool = False) -> WebhookTarget:
    target = await system.connector_accounts.webhook_target(connector, account_id, fresh=fresh)
    if target is None:
        raise NotFound(f"No {connector} webhooks are received at this path.", param="connector_account")
    return target


async def _store(system: Components, event: webhooks.GatewayEvent, raw: bytes) -> dict:
    started = time.perf_counter()
    new = await system.inbox.writer.store(event, raw.decode("utf-8", "replace"), system.settings.ask_timeout_s)
    metrics.WEBHOOKS_RECEIVED.labels(event.connector, "new" if new else "duplicate").inc()
    log.info("webhook received: %s%s %s %s for %s (%s, stored in %.1f ms)", event.connector,
             f"/{event.account_id}" if event.account_id else "", event.event_id, event.kind,
             event.payment_id or event.connector_txn_id or "-", "new" if new else "duplicate",
             (time.perf_counter() - started) * 1000)
    return {"received": True, "duplicate": not new}


@bp.post("/webhooks/<connector>")
async def receive_webhook(connector: str):
    """Served by :class:`app.webhooks_endpoint.WebhooksEndpoint` in front of Quart wherever this
    blueprint is; the route stays for what Quart answers around it (405 for other methods)."""
    return json_response(await ingest(components(), connector, await read_raw(), request.headers))


@bp.post("/webhooks/<connector>/<mca_id>")
async def receive_account_webhook(connector: str, mca_id: str):
    """Served by :class:`app.webhooks_endpoint.WebhooksEndpoint` too (this route stays for Quart's 405s)."""
    return json_response(await ingest_for_account(components(), connector, mca_id, await read_raw(),
                                                  request.headers))
