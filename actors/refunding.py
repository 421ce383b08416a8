"""What the payment actor does for a refund (it runs inside the payment's actor,
so a payment's refunds, captures and webhooks are handled one at a time).

Reserve in the database first, then ask the connector, then record its answer:
a refund the connector never heard of is failed (its amount released); one
whose request timed out stays ``pending`` until the connector's webhook says
how it ended.
"""

from __future__ import annotations

import logging

from actors.connector_call import submission_of
from actors.payment_messages import Refund
from actors.ports import ConnectorWork
from gateways.base import RefundRequest, Submission
from storage import refunds

log = logging.getLogger("paycast.refunds")


async def refund(payments: ConnectorWork, payment_id: str, msg: Refund) -> dict:
    """Handle :class:`actors.payment_messages.Refund`.

    Returns:
      The refund's API form (usually ``pending``).

    Raises:
      NotFound, StateError, ChargeDisputed, RefundExceedsPayment: from :func:`storage.refunds.begin`.
    """
    db = payments.db
    begun = await db.transaction(refunds.begin, msg.merchant_id, payment_id, msg.amount, msg.reason,
                                 msg.metadata or {})
    row = begun["refund"]
    submission = await _submit(payments, RefundRequest(
        refund_id=row["id"], payment_id=payment_id, merchant_id=msg.merchant_id,
        connector_txn_id=begun["connector_txn_id"], amount=row["amount"], currency=row["currency"],
    ), row["connector"], begun["connector_account_id"])
    return await db.transaction(refunds.record_submission, row["id"], submission)


async def _submit(payments: ConnectorWork, request: RefundRequest, connector_name: str, account_id: str | None) -> Submission:
    # A real connector's refund goes to the account that charged, even if it is disabled now.
    result = await payments.connector_call.call(connector_name, lambda c: c.refund(request),
                                              what=f"refund {request.refund_id}", gate=True, account_id=account_id)
    return submission_of(result, f"refund {request.refund_id}")
