"""Reconciliation: stuck ``processing`` payments are resolved by asking the
connector; after the max checks they are flagged for review. Settlement reports."""

from __future__ import annotations

import pytest

from tests.support import ROLLUPS_CHECK, UPI, ServerProcess, expect, payment_body, run_check, wait_for


@pytest.fixture(scope="module")
def fast_server(new_database):
    proc = ServerProcess(new_database("paycast_recon"), PAYCAST_PROCESSING_DEADLINE_S="0.5",
                         PAYCAST_RECONCILE_INTERVAL_S="0.1", PAYCAST_RECONCILE_MAX_CHECKS="2",
                         PAYCAST_FLAKY_ERROR_RATE="1.0").start()
    try:
        yield proc
    finally:
        proc.stop()


def test_pending_upi_is_resolved_by_reconciliation(fast_server):
    with fast_server.client(fast_server.create_merchant()) as c:
        pay = c.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), confirm=True)).json()
        assert pay["status"] == "processing"
        done = wait_for(lambda: (p := c.get(f"/v1/payments/{pay['id']}").json())["status"] == "succeeded" and p)
        assert done["attempts"][0]["status"] == "succeeded"
        assert done["review_required"] is False


def test_unknown_outcome_is_reconciled_to_failed(fast_server):
    """flaky at error rate 1.0 times out or 500s; pinned, nothing to fall back to → unknown → reconcile."""
    with fast_server.client(fast_server.create_merchant()) as c:
        pay = c.post("/v1/payments", json=payment_body(connector="flaky", confirm=True)).json()
        assert pay["status"] == "processing"
        assert pay["attempts"][0]["status"] == "unknown"
        assert pay["last_error"]["code"] in ("connector_timeout", "connector_server_error")
        done = wait_for(lambda: (p := c.get(f"/v1/payments/{pay['id']}").json())["status"] == "failed" and p)
        assert done["attempts"][0]["status"] == "failed"
        assert done["last_error"]["code"] == "payment_not_found"


def test_inconclusive_checks_end_in_review_required(fast_server):
    """Its connector is no longer configured, so nobody can answer: every check is
    inconclusive and after the max checks the payment is flagged, once."""
    from tests.support import db_fetch

    with fast_server.client(fast_server.create_merchant()) as c:
        pay = c.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), confirm=True)).json()
        db_fetch(fast_server.dsn, "UPDATE payment_attempts SET connector = 'nowhere' WHERE payment_id = $1", pay["id"])
        flagged = wait_for(lambda: (p := c.get(f"/v1/payments/{pay['id']}").json())["review_required"] and p)
        assert flagged["status"] == "processing"
        types = [e["type"] for e in c.get("/v1/events", params={"object_id": pay["id"]}).json()["data"]]
        assert types.count("payment.review_required") == 1
    # The attempt's connector was renamed by hand above, behind the event log the rollups fold.
    assert run_check(fast_server.dsn, skip=(ROLLUPS_CHECK,)).returncode == 0


def test_settlement_report(client):
    ok = [client.post("/v1/payments", json=payment_body(1000 + i, connector="mockstripe", confirm=True)).json()
          for i in range(3)]
    txns = [p["attempts"][0]["connector_txn_id"] for p in ok]
    csv = "\n".join([
        "connector_txn_id,amount,currency,status",
        f"{txns[0]},1000,INR,succeeded",
        f"{txns[1]},9999,INR,succeeded",
        "pi_not_ours,500,INR,succeeded",
    ]) + "\n"
    r = client.post("/v1/reconciliation/reports", params={"connector": "mockstripe"}, content=csv,
                    headers={"Content-Type": "text/csv"})
    expect(r, 201)
    report = r.json()
    assert report["id"].startswith("rcn_")
    assert report["matched"] == 1
    assert [m["connector_txn_id"] for m in report["mismatched"]] == [txns[1]]
    assert report["mismatched"][0]["fields"] == ["amount"]
    assert report["missing_in_paycast"] == ["pi_not_ours"]
    assert report["missing_in_report"] == [txns[2]]
    bad = client.post("/v1/reconciliation/reports", params={"connector": "mockstripe"}, content="a,b\n1,2\n")
    expect(bad, 400)
    expect(client.post("/v1/reconciliation/reports", params={"connector": "x"}, content=csv), 400)


@pytest.mark.parametrize("body", [
    # What schemathesis sent (seed 1993465496121208588): a bare carriage return inside the first line.
    b"\ri\xc2\xb9C\xc2\x88c{\xf3\x88\xb0\x81\xc2\xb90\xf1\xbf\x9c\xb4",
    b"connector_txn_id,amount,currency,status\npi_1,\xc2\xb9,INR,succeeded\n",   # "¹" passes str.isdigit
    b"connector_txn_id,amount,currency,status\npi_1,--5,INR,succeeded\n",
    b"connector_txn_id,amount,currency,status\npi_1,99999999999999999999,INR,succeeded\n",  # past a bigint
    b"connector_txn_id,amount,currency,status\npi_1,\"" + b"9" * 200_000 + b"\",INR,succeeded\n",  # csv field limit
], ids=["bare-cr", "superscript-digit", "double-minus", "past-bigint", "huge-field"])
def test_unreadable_settlement_csv_is_a_typed_400(client, body):
    r = client.post("/v1/reconciliation/reports", params={"connector": "mockstripe"}, content=body,
                    headers={"Content-Type": "text/csv"})
    expect(r, 400)
    assert r.json()["error"]["type"] == "invalid_request_error" and r.json()["error"]["param"] == "body", r.text
