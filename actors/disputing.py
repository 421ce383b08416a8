"""What the payment actor does for a merchant's answer to a dispute (evidence,
acceptance). It runs inside the payment's actor, so it is serialised with the
connector's dispute webhooks for the same payment.

The connector hears first, then the database records it: a verdict the
connector sends in reply is applied after this (same actor), and a failed
connector call changes nothing here.
"""

from __future__ import annotations

import logging

from actors.payment_messages import AcceptDispute, SubmitDisputeEvidence
from actors.ports import ConnectorWork
from domain import disputes as rules
from storage import disputes

log = logging.getLogger("paycast.disputes")


async def _call(payments: ConnectorWork, row, what: str, call) -> None:
    (await payments.connector_call.call(row["connector"], call, what=f"dispute {what} {row['id']}",
                                        account_id=row["connector_account_id"])).unwrap()


async def submit_evidence(payments: ConnectorWork, msg: SubmitDisputeEvidence) -> dict:
    """Handle :class:`actors.payment_messages.SubmitDisputeEvidence`.

    Raises:
      NotFound, DisputeStateError (checked before the connector is called), Unavailable.
    """
    row = await payments.db.transaction(disputes.fetch_row, msg.merchant_id, msg.dispute_id)
    rules.next_status(row["status"], rules.Trigger.SUBMIT_EVIDENCE)
    await _call(payments, row, "evidence", lambda c: c.submit_dispute_evidence(
        row["connector_dispute_id"], msg.text, payment_id=row["payment_id"], dispute_id=row["id"],
        amount=row["amount"], currency=row["currency"]))
    return await payments.db.transaction(disputes.submit_evidence, msg.merchant_id, msg.dispute_id, msg.text)


async def accept(payments: ConnectorWork, msg: AcceptDispute) -> dict:
    """Handle :class:`actors.payment_messages.AcceptDispute`.

    Raises:
      NotFound, DisputeStateError, Unavailable.
    """
    row = await payments.db.transaction(disputes.fetch_row, msg.merchant_id, msg.dispute_id)
    rules.next_status(row["status"], rules.Trigger.ACCEPT)
    await _call(payments, row, "accept", lambda c: c.accept_dispute(row["connector_dispute_id"]))
    return await payments.db.transaction(disputes.accept, msg.merchant_id, msg.dispute_id)
