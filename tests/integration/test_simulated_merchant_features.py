"""The simulated connectors' refunds, payouts and disputes (trio, no network):
what they answer and which webhooks they schedule."""

from __future__ import annotations

import pytest

from domain.payments import OutcomeKind
from gateways.base import AuthorizeRequest, PayoutRequest, RefundRequest
from gateways.simulated import build_connectors, decode


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def schedule(self, connector, kind, txn_id, amount, currency, metadata, status=None) -> None:
        self.sent.append((connector, kind, txn_id, amount, currency, metadata))


def _card(number: str) -> dict:
    return {"type": "card", "card": {"first6": number[:6], "last4": number[-4:]}}


@pytest.fixture(params=["mockstripe", "mockrazorpay"])
def connector(request):
    recorder = Recorder()
    return build_connectors(0.0, recorder)[request.param], recorder


async def _charge(conn, number, amount=1000):
    return await conn.authorize(AuthorizeRequest("pay_1", "att_1", "mer_1", amount, "INR", "automatic",
                                                 _card(number)))


async def test_dispute_card_succeeds_then_opens_a_dispute(connector):
    conn, recorder = connector
    outcome = await _charge(conn, "4000000000000259", 1500)
    assert outcome.kind is OutcomeKind.SUCCEEDED
    assert decode(outcome.connector_txn_id).kind is OutcomeKind.SUCCEEDED
    assert (await conn.retrieve(outcome.connector_txn_id, "pay_1")).kind is OutcomeKind.SUCCEEDED
    [(name, kind, dispute_txn, amount, currency, metadata)] = recorder.sent
    assert name == conn.name
    assert kind == "dispute.opened"
    assert amount == 1500
    assert metadata == {"payment_id": "pay_1"}
    await conn.submit_dispute_evidence(dispute_txn, "here is winning_evidence", payment_id="pay_1",
                                       dispute_id="dp_1", amount=1500, currency="INR")
    await conn.submit_dispute_evidence(dispute_txn, "losing_evidence", payment_id="pay_1",
                                       dispute_id="dp_1", amount=1500, currency="INR")
    await conn.submit_dispute_evidence(dispute_txn, "a receipt", payment_id="pay_1",
                                       dispute_id="dp_1", amount=1500, currency="INR")
    assert [s[1] for s in recorder.sent[1:]] == ["dispute.won", "dispute.lost"]
    assert recorder.sent[1][5] == {"payment_id": "pay_1", "dispute_id": "dp_1"}


async def test_refunds_succeed_by_webhook_except_on_the_refund_failing_card(connector):
    conn, recorder = connector
    good = await _charge(conn, "4242424242424242")
    bad = await _charge(conn, "4000000000005126")
    assert bad.kind is OutcomeKind.SUCCEEDED
    assert not recorder.sent
    for charge, expected in ((good, "refund.succeeded"), (bad, "refund.failed")):
        submission = await conn.refund(RefundRequest("re_1", "pay_1", "mer_1", charge.connector_txn_id, 400, "INR"))
        assert submission.status == "pending"
        assert submission.reference
        assert recorder.sent[-1][1:] == (expected, submission.reference, 400, "INR",
                                         {"payment_id": "pay_1", "refund_id": "re_1"})


async def test_payouts_are_paid_unless_the_amount_ends_in_99(connector):
    conn, recorder = connector
    for amount, expected in ((1000, "payout.paid"), (1099, "payout.failed"), (99, "payout.failed")):
        submission = await conn.payout(PayoutRequest("txn_1", "acct_1", "mer_1", amount, "INR"))
        assert submission.status == "pending"
        assert recorder.sent[-1][1:] == (expected, submission.reference, amount, "INR", {"transaction_id": "txn_1"})
