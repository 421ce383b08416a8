"""The account actor: every deposit and withdrawal of one wallet goes through
its inbox (``actor:account:<acct_id>``).

The work runs in the actor's task, not the request's, so a client that goes
away mid-request never leaves a reserved withdrawal without its payout call.
Across processes the database keeps balances right on its own (the account
row is locked while a withdrawal reserves), so the actor only orders work.
"""

from __future__ import annotations

import logging

from actors.account_messages import Deposit, Withdraw
from actors.connector_call import submission_of
from actors.payment_messages import Confirm
from actors.ports import AccountSide
from actors.runtime import Handlers
from gateways.base import PayoutRequest, Submission
from storage import accounts

log = logging.getLogger("paycast.accounts")
# Which method handles which message (filled by @handles below).
handles = Handlers("account")


class AccountActor:
    """Handles one message for one account (the registry serialises per account).

    Args:
      payments: the payment side (:class:`actors.ports.AccountSide`; the running
        :class:`components.payments.Payments`).
    """

    def __init__(self, payments: AccountSide) -> None:
        self.payments = payments

    async def handle(self, account_id: str, message: object) -> dict:
        return await handles.dispatch(self, account_id, message)

    @handles(Deposit)
    async def _deposit(self, account_id: str, msg: Deposit) -> dict:
        """Create the deposit and its payment, then have the payment actor confirm it.

        The confirm is told, not awaited: the deposit answers ``pending`` at
        once and completes when its payment does (clients poll the
        transaction or listen for its event). A confirm that never runs (the
        process dies) leaves a ``processing`` payment that reconciliation settles.
        """
        payments = self.payments
        transaction, begun = await payments.db.transaction(
            accounts.begin_deposit, msg.merchant_id, account_id, msg.amount, msg.payment_method,
            payments.settings.processing_deadline_s, payments.router(),
        )
        if not payments.tell_payment(begun.payment["id"], Confirm(msg.merchant_id, begun)):
            log.warning("deposit %s: could not hand its payment to an actor; reconciliation will", transaction["id"])
        return transaction

    @handles(Withdraw)
    async def _withdraw(self, account_id: str, msg: Withdraw) -> dict:
        """Reserve, ask the connector for a payout, record its answer."""
        payments = self.payments
        transaction = await payments.db.transaction(accounts.begin_withdrawal, msg.merchant_id, account_id,
                                                  msg.amount, payments.payout_router())
        request = PayoutRequest(transaction_id=transaction["id"], account_id=account_id,
                                merchant_id=msg.merchant_id, amount=msg.amount, currency=transaction["currency"])
        submission = await self._payout(request, transaction["connector"])
        return await payments.db.transaction(accounts.record_payout, transaction["id"], submission)

    async def _payout(self, request: PayoutRequest, connector_name: str) -> Submission:
        result = await self.payments.connector_call.call(connector_name, lambda c: c.payout(request),
                                                       what=f"payout {request.transaction_id}", gate=True)
        return submission_of(result, f"payout {request.transaction_id}")
