"""Refunds end to end: full and partial, through both connectors, asynchronous
completion by webhook, failures, orders becoming refunded, and the limit
"non-failed refunds never exceed what was received" under concurrency across
two processes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import UPI, db_fetch, expect, payment_body, run_check, stop_all, wait_for


CARD_REFUND_FAILS = {"type": "card", "card": {"number": "4000000000005126"}}


def _refund_status(client, refund_id, expected):
    def check():
        body = client.get(f"/v1/refunds/{refund_id}").json()
        return body if body["status"] == expected else None

    return wait_for(check)


@pytest.mark.parametrize("connector", ["mockstripe", "mockrazorpay"])
def test_full_refund_completes_by_webhook_and_refunds_the_order(client, connector):
    order = client.post("/v1/orders", json={"amount": 2500, "currency": "INR", "customer_id": "cus_r1"}).json()
    pay = client.post("/v1/payments", json=payment_body(2500, order_id=order["id"], connector=connector,
                                                        confirm=True)).json()
    assert pay["status"] == "succeeded"
    r = client.post("/v1/refunds", json={"payment_id": pay["id"], "reason": "requested_by_customer"})
    expect(r, 201)
    refund = r.json()
    assert refund["object"] == "refund"
    assert refund["id"].startswith("re_")
    assert refund["status"] == "pending"
    assert refund["amount"] == 2500
    assert refund["connector"] == connector
    assert refund["payment_id"] == pay["id"]
    assert refund["reason"] == "requested_by_customer"
    assert client.get(f"/v1/payments/{pay['id']}").json()["amount_refunded"] == 2500
    done = _refund_status(client, refund["id"], "succeeded")
    assert done["currency"] == "INR"
    wait_for(lambda: client.get(f"/v1/orders/{order['id']}").json()["status"] == "refunded")
    events = client.get("/v1/events", params={"object_id": refund["id"]}).json()["data"]
    assert [e["type"] for e in events] == ["refund.succeeded"]
    assert events[0]["data"]["object"]["status"] == "succeeded"
    # Nothing left to refund.
    again = client.post("/v1/refunds", json={"payment_id": pay["id"]})
    expect(again, 409)
    assert again.json()["error"] == {"type": "state_error", "code": "refund_exceeds_payment",
                                     "message": again.json()["error"]["message"], "param": "amount"}


def test_partial_refunds_and_listing(client):
    pay = client.post("/v1/payments", json=payment_body(1000, customer_id="cus_r2", confirm=True)).json()
    ids = []
    for amount in (100, 250, 300):
        r = client.post("/v1/refunds", json={"payment_id": pay["id"], "amount": amount})
        expect(r, 201)
        ids.append(r.json()["id"])
    too_much = client.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 351})
    expect(too_much, 409)
    assert too_much.json()["error"]["code"] == "refund_exceeds_payment"
    rest = client.post("/v1/refunds", json={"payment_id": pay["id"]}).json()
    assert rest["amount"] == 350
    ids.append(rest["id"])
    for refund_id in ids:
        _refund_status(client, refund_id, "succeeded")
    got = client.get(f"/v1/payments/{pay['id']}").json()
    assert got["amount_refunded"] == 1000
    assert got["status"] == "succeeded"
    page = client.get("/v1/refunds", params={"payment_id": pay["id"], "limit": 3}).json()
    assert page["object"] == "list"
    assert page["has_more"] is True
    assert [r["id"] for r in page["data"]] == ids[::-1][:3]
    rest_page = client.get("/v1/refunds", params={"payment_id": pay["id"], "starting_after": page["data"][-1]["id"]})
    assert [r["id"] for r in rest_page.json()["data"]] == [ids[0]]
    assert rest_page.json()["has_more"] is False
    events = client.get("/v1/events", params={"type": "refund.succeeded", "limit": 10}).json()["data"]
    assert {e["data"]["object"]["id"] for e in events} >= set(ids)


def test_refund_that_fails_releases_its_amount(client):
    pay = client.post("/v1/payments", json=payment_body(800, method=CARD_REFUND_FAILS, confirm=True)).json()
    assert pay["status"] == "succeeded"
    refund = client.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 500}).json()
    assert refund["status"] == "pending"
    failed = _refund_status(client, refund["id"], "failed")
    assert failed["failure_reason"] == "refund_failed"
    assert client.get(f"/v1/payments/{pay['id']}").json()["amount_refunded"] == 0
    types = [e["type"] for e in client.get("/v1/events", params={"object_id": refund["id"]}).json()["data"]]
    assert types == ["refund.failed"]
    # The released amount can be refunded again (it fails again with this card, but is accepted).
    expect(client.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 800}), 201)


def test_refund_of_unfinished_or_failed_payment_is_409(client):
    unconfirmed = client.post("/v1/payments", json=payment_body()).json()
    r = client.post("/v1/refunds", json={"payment_id": unconfirmed["id"]})
    expect(r, 409)
    assert r.json()["error"]["code"] == "payment_unexpected_state"
    assert r.json()["error"]["type"] == "state_error"
    processing = client.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), confirm=True)).json()
    r = client.post("/v1/refunds", json={"payment_id": processing["id"], "amount": 10})
    expect(r, 409)
    assert r.json()["error"]["code"] == "payment_unexpected_state"
    declined = client.post("/v1/payments", json=payment_body(
        method={"type": "card", "card": {"number": "4000000000000002"}}, confirm=True)).json()
    expect(client.post("/v1/refunds", json={"payment_id": declined["id"]}), 409)
    manual = client.post("/v1/payments", json=payment_body(capture_method="manual", confirm=True)).json()
    assert manual["status"] == "requires_capture"
    expect(client.post("/v1/refunds", json={"payment_id": manual["id"]}), 409)
    captured = client.post(f"/v1/payments/{manual['id']}/capture", json={"amount": 600}).json()
    assert captured["amount_received"] == 600
    r = client.post("/v1/refunds", json={"payment_id": manual["id"], "amount": 601})
    expect(r, 409)
    assert r.json()["error"]["code"] == "refund_exceeds_payment"
    expect(client.post("/v1/refunds", json={"payment_id": manual["id"], "amount": 600}), 201)


def test_refund_validation_errors_name_the_param(client):
    pay = client.post("/v1/payments", json=payment_body(confirm=True)).json()
    cases = [({"payment_id": pay["id"], "amount": 0}, "amount"), ({"payment_id": pay["id"], "amount": "5"}, "amount"),
             ({"payment_id": pay["id"], "reason": "because"}, "reason"), ({}, "payment_id"),
             ({"payment_id": pay["id"], "bogus": 1}, "bogus")]
    for body, param in cases:
        r = client.post("/v1/refunds", json=body)
        expect(r, 400, note=body)
        assert r.json()["error"]["param"] == param
    expect(client.post("/v1/refunds", json={"payment_id": "pay_nope"}), 404)
    expect(client.get("/v1/refunds/re_nope"), 404)


def test_refund_is_idempotent(client):
    pay = client.post("/v1/payments", json=payment_body(1000, confirm=True)).json()
    headers = {"Idempotency-Key": f"refund-{pay['id']}"}
    first = client.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 400}, headers=headers)
    second = client.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 400}, headers=headers)
    expect(first, 201)
    expect(second, 201)
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert second.content == first.content
    assert client.get(f"/v1/payments/{pay['id']}").json()["amount_refunded"] == 400


def test_concurrent_partial_refunds_across_two_processes_never_exceed_the_payment(new_database, start_server):
    """Ten refunds of 300 against 1000 received, split over two processes: exactly three succeed."""
    dsn = new_database("paycast_refund_race")
    a, b = start_server(dsn), start_server(dsn)
    try:
        api_key = a.create_merchant()
        with a.client(api_key) as c:
            payments = [c.post("/v1/payments", json=payment_body(1000, connector=conn, confirm=True)).json()
                        for conn in ("mockstripe", "mockrazorpay")]

        def refund(job):
            server, pay_id = job
            with server.client(api_key) as c:
                return c.post("/v1/refunds", json={"payment_id": pay_id, "amount": 300})

        jobs = [(a if i % 2 else b, p["id"]) for p in payments for i in range(10)]
        with ThreadPoolExecutor(20) as pool:
            responses = list(pool.map(refund, jobs))
        for pay in payments:
            mine = [r for (server, pid), r in zip(jobs, responses) if pid == pay["id"]]
            assert sorted(r.status_code for r in mine) == [201] * 3 + [409] * 7, [r.text for r in mine]
            assert {r.json()["error"]["code"] for r in mine if r.status_code == 409} == {"refund_exceeds_payment"}
        with b.client(api_key) as c:
            for pay in payments:
                wait_for(lambda: all(r["status"] == "succeeded" for r in c.get(
                    "/v1/refunds", params={"payment_id": pay["id"]}).json()["data"]))
                assert c.get(f"/v1/payments/{pay['id']}").json()["amount_refunded"] == 900
        rows = db_fetch(dsn, "SELECT payment_id, sum(amount) AS total FROM refunds WHERE status <> 'failed'"
                             " GROUP BY payment_id")
        assert sorted(r["total"] for r in rows) == [900, 900]
        check = run_check(dsn)
        assert check.returncode == 0, check.stdout
    finally:
        stop_all([a, b])
