"""Refunds and withdrawals left pending are reconciled like payments: asked past
the deadline (a never-answered ``…77`` amount is found done), and flagged
``review_required`` with an event when the connector never answers, their
reserved amounts untouched."""

from __future__ import annotations

import pytest

from tests.support import CARD_OK, ServerProcess, db_fetch, payment_body, run_check, wait_for


@pytest.fixture(scope="module")
def recon_server(new_database):
    proc = ServerProcess(new_database("paycast_pending"), PAYCAST_PROCESSING_DEADLINE_S="1",
                         PAYCAST_RECONCILE_INTERVAL_S="0.2", PAYCAST_RECONCILE_MAX_CHECKS="2").start()
    yield proc
    proc.stop()


def _events(c, object_id):
    return [e["type"] for e in c.get("/v1/events", params={"object_id": object_id}).json()["data"]]


def _funded_account(c, amount):
    account = c.post("/v1/accounts", json={"customer_id": "cus_rec", "currency": "INR"}).json()
    dep = c.post(f"/v1/accounts/{account['id']}/deposits", json={"amount": amount, "payment_method": CARD_OK}).json()
    wait_for(lambda: c.get(f"/v1/transactions/{dep['id']}").json()["status"] == "completed")
    return account


def test_never_answered_refund_and_withdrawal_are_found_done(recon_server):
    with recon_server.client(recon_server.create_merchant()) as c:
        pay = c.post("/v1/payments", json=payment_body(5000, confirm=True)).json()
        refund = c.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 1077}).json()
        assert refund["status"] == "pending"
        assert refund["review_required"] is False
        account = _funded_account(c, 10_000)
        txn = c.post(f"/v1/accounts/{account['id']}/withdrawals", json={"amount": 2077}).json()
        assert txn["status"] == "pending"
        assert c.get(f"/v1/accounts/{account['id']}").json()["available_balance"] == 10_000 - 2077

        done = wait_for(lambda: (r := c.get(f"/v1/refunds/{refund['id']}").json())["status"] == "succeeded" and r,
                        timeout=20)
        assert done["review_required"] is False
        assert _events(c, refund["id"]) == ["refund.succeeded"]
        paid = wait_for(lambda: (t := c.get(f"/v1/transactions/{txn['id']}").json())["status"] == "completed" and t,
                        timeout=20)
        assert paid["review_required"] is False
        got = c.get(f"/v1/accounts/{account['id']}").json()
        assert got["balance"] == got["available_balance"] == 10_000 - 2077
        assert _events(c, txn["id"]) == ["account.withdrawal.completed"]
    assert run_check(recon_server.dsn).returncode == 0


def test_unanswerable_refund_and_withdrawal_are_flagged_with_funds_reserved(recon_server):
    with recon_server.client(recon_server.create_merchant()) as c:
        pay = c.post("/v1/payments", json=payment_body(5000, confirm=True)).json()
        refund = c.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 2077}).json()
        account = _funded_account(c, 10_000)
        txn = c.post(f"/v1/accounts/{account['id']}/withdrawals", json={"amount": 3077}).json()
        # Their connector is gone (nobody can answer): every check is inconclusive.
        db_fetch(recon_server.dsn, "UPDATE refunds SET connector = 'nowhere' WHERE id = $1", refund["id"])
        db_fetch(recon_server.dsn, "UPDATE account_transactions SET connector = 'nowhere' WHERE id = $1", txn["id"])

        flagged = wait_for(lambda: (r := c.get(f"/v1/refunds/{refund['id']}").json())["review_required"] and r,
                           timeout=20)
        assert flagged["status"] == "pending"
        assert c.get(f"/v1/payments/{pay['id']}").json()["amount_refunded"] == 2077  # still reserved
        held = wait_for(lambda: (t := c.get(f"/v1/transactions/{txn['id']}").json())["review_required"] and t,
                        timeout=20)
        assert held["status"] == "pending"
        got = c.get(f"/v1/accounts/{account['id']}").json()
        assert got["available_balance"] == 10_000 - 3077
        assert got["balance"] == 10_000  # reserved, not spent
        # Flagged once; no further checks move anything.
        wait_for(lambda: "refund.review_required" in _events(c, refund["id"]))
        assert _events(c, refund["id"]) == ["refund.review_required"]
        assert _events(c, txn["id"]) == ["account.withdrawal.review_required"]
        rows = db_fetch(recon_server.dsn, "SELECT reconcile_checks FROM refunds WHERE id = $1", refund["id"])
        assert rows[0]["reconcile_checks"] == 2
    assert run_check(recon_server.dsn).returncode == 0
