"""What the payment actor does for a refund (it runs inside the payment's actor,
so a payment's refunds, captures and webhooks are handled one at a time).

Reserve in the database first, then ask the connector, then record its answer:
a refund the connector never heard of is failed (its amount released); one
whose request timed out stays ``pending`` until the connector's webhook says
how it ended.
"""

from __future__ import annotations

import logging

import trio

from gateways.base import ConnectorError, ConnectorTimeout, RefundRequest, Submission
from storage import refunds

log = logging.getLogger("paycast.refunds")


async def refund(system, payment_id: str, msg) -> dict:
    """Handle :class:`actors.payment_messages.Refund`.

    Returns:
      The refund's API form (usually ``pending``).

    Raises:
      NotFound, StateError, ChargeDisputed, RefundExceedsPayment: from :func:`storage.refunds.begin`.
    """
    db = system.db
    begun = await db.transaction(refunds.begin, msg.merchant_id, payment_id, msg.amount, msg.reason,
                                 msg.metadata or {})
    row = begun["refund"]
    submission = await _submit(system, RefundRequest(
        refund_id=row["id"], payment_id=payment_id, merchant_id=msg.merchant_id,
        connector_txn_id=begun["connector_txn_id"], amount=row["amount"], currency=row["currency"],
    ), row["connector"])
    return await db.transaction(refunds.record_submission, row["id"], submission)


async def _submit(system, request: RefundRequest, connector_name: str) -> Submission:
    connector = system.connectors.get(connector_name)
    if connector is None:
        return Submission("failed", None, "connector_unavailable")
    try:
        with trio.fail_after(system.settings.connector_timeout_s):
            return await connector.refund(request)
    except (ConnectorTimeout, trio.TooSlowError):
        # The connector may have taken it: keep it pending, its webhook settles it.
        log.warning("refund %s: connector %s timed out; waiting for its webhook", request.refund_id, connector_name)
        return Submission("pending")
    except ConnectorError as exc:
        # A definite "not processed": the refund failed and its amount is released.
        log.warning("refund %s: connector %s refused: %s", request.refund_id, connector_name, exc)
        return Submission("failed", None, exc.code)
