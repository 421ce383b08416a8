"""``POST /webhooks/{connector}``: gateway webhooks in.

Verify the signature first (a forged body is never parsed or stored), parse,
then store durably through the group-commit writer; 200 only after commit.
:func:`ingest` is the whole of it; :mod:`app.webhooks_endpoint` serves it.
"""

from __future__ import annotations

import logging
import time

from quart import Blueprint, request

from app.body import json_response, read_raw
from app.context import components
from domain import signatures, webhooks
from domain.errors import InvalidRequest, NotFound
from telemetry import metrics

log = logging.getLogger("paycast.webhooks.in")

bp = Blueprint("webhooks", __name__)


def _verify(connector: str, secret: str, raw: bytes, now: int, headers) -> None:
    try:
        if webhooks.FORMATS[connector] == "stripe":
            signatures.verify_stripe(secret, raw, headers.get("Stripe-Signature"), now)
        else:
            signatures.verify_razorpay(secret, raw, headers.get("X-Razorpay-Signature"))
    except signatures.SignatureError as exc:
        metrics.SIGNATURE_FAILURES.labels(connector, exc.code).inc()
        log.warning("webhook refused: %s signature %s", connector, exc.code)
        raise InvalidRequest(str(exc), code=exc.code) from None


async def ingest(system, connector: str, raw: bytes, headers) -> dict:
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
    started = time.perf_counter()
    new = await system.inbox.writer.store(event, raw.decode("utf-8", "replace"), system.settings.ask_timeout_s)
    metrics.WEBHOOKS_RECEIVED.labels(connector, "new" if new else "duplicate").inc()
    log.info("webhook received: %s %s %s for %s (%s, stored in %.1f ms)", connector, event.event_id, event.kind,
             event.payment_id or event.connector_txn_id or "-", "new" if new else "duplicate",
             (time.perf_counter() - started) * 1000)
    return {"received": True, "duplicate": not new}


@bp.post("/webhooks/<connector>")
async def receive_webhook(connector: str):
    """Served by :class:`app.webhooks_endpoint.WebhooksEndpoint` in front of Quart wherever this
    blueprint is; the route stays for what Quart answers around it (405 for other methods)."""
    return json_response(await ingest(components(), connector, await read_raw(), request.headers))
