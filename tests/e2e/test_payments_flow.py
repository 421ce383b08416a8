"""End to end over real HTTP: orders, payments, capture, cancel, events."""

from __future__ import annotations

from tests.support import CARD_DECLINED, CARD_NO_FUNDS, CARD_OK, expect, payment_body


def test_walkthrough_order_paid_by_card(client):
    order = client.post("/v1/orders", json={"amount": 2500, "currency": "INR", "customer_id": "cus_42"})
    expect(order, 201)
    order = order.json()
    assert order["id"].startswith("ord_")
    assert order["status"] == "created"
    assert order["payment_ids"] == []

    pay = client.post("/v1/payments", json=payment_body(2500, order_id=order["id"]))
    expect(pay, 201)
    pay = pay.json()
    assert pay["status"] == "requires_confirmation"
    assert pay["customer_id"] == "cus_42"

    confirmed = client.post(f"/v1/payments/{pay['id']}/confirm")
    expect(confirmed, 200)
    body = confirmed.json()
    assert body["status"] == "succeeded"
    assert body["amount_received"] == 2500
    assert [a["status"] for a in body["attempts"]] == ["succeeded"]
    assert body["attempts"][0]["id"].startswith("att_")
    assert body["payment_method"] == {"type": "card", "card": {"brand": "visa", "last4": "4242"}}

    got = client.get(f"/v1/orders/{order['id']}").json()
    assert got["status"] == "paid"
    assert got["payment_ids"] == [pay["id"]]

    events = client.get("/v1/events").json()
    types = [e["type"] for e in events["data"]]
    assert types == ["order.paid", "payment.succeeded", "payment.created"]
    seqs = [e["seq"] for e in events["data"]]
    assert seqs == sorted(seqs, reverse=True)
    assert seqs[-1] == 1
    assert len(set(seqs)) == 3
    assert events["data"][1]["data"]["object"]["status"] == "succeeded"


def test_create_with_confirm_true(client):
    r = client.post("/v1/payments", json=payment_body(700, "USD", confirm=True))
    expect(r, 201)
    assert r.json()["status"] == "succeeded"


def test_declines_fail_with_codes(client):
    for method, code in ((CARD_DECLINED, "card_declined"), (CARD_NO_FUNDS, "insufficient_funds")):
        r = client.post("/v1/payments", json=payment_body(method=method, confirm=True)).json()
        assert r["status"] == "failed"
        assert r["last_error"]["code"] == code
        assert r["attempts"][0]["status"] == "failed"
        assert r["attempts"][0]["error_code"] == code
        assert r["amount_received"] == 0


def test_failed_payment_marks_order_then_a_new_payment_pays_it(client):
    order = client.post("/v1/orders", json={"amount": 900, "currency": "INR"}).json()
    failed = client.post("/v1/payments", json=payment_body(900, method=CARD_DECLINED, order_id=order["id"],
                                                            confirm=True)).json()
    assert failed["status"] == "failed"
    assert client.get(f"/v1/orders/{order['id']}").json()["status"] == "payment_failed"
    ok = client.post("/v1/payments", json=payment_body(900, order_id=order["id"], confirm=True)).json()
    assert ok["status"] == "succeeded"
    got = client.get(f"/v1/orders/{order['id']}").json()
    assert got["status"] == "paid"
    assert got["payment_ids"] == [failed["id"], ok["id"]]


def test_order_amount_and_currency_must_match(client):
    order = client.post("/v1/orders", json={"amount": 900, "currency": "INR"}).json()
    r = client.post("/v1/payments", json=payment_body(901, order_id=order["id"]))
    expect(r, 400)
    assert r.json()["error"]["param"] == "amount"
    r = client.post("/v1/payments", json=payment_body(900, "USD", order_id=order["id"]))
    expect(r, 400)
    assert r.json()["error"]["param"] == "currency"


def test_manual_capture_partial(client):
    pay = client.post("/v1/payments", json=payment_body(5000, capture_method="manual", confirm=True)).json()
    assert pay["status"] == "requires_capture"
    assert pay["amount_capturable"] == 5000
    assert pay["attempts"][0]["status"] == "authorized"
    too_much = client.post(f"/v1/payments/{pay['id']}/capture", json={"amount": 5001})
    expect(too_much, 400)
    assert too_much.json()["error"]["param"] == "amount"
    cap = client.post(f"/v1/payments/{pay['id']}/capture", json={"amount": 3000})
    expect(cap, 200)
    cap = cap.json()
    assert cap["status"] == "succeeded"
    assert cap["amount_received"] == 3000
    assert cap["amount_capturable"] == 0
    assert cap["attempts"][0]["status"] == "succeeded"
    again = client.post(f"/v1/payments/{pay['id']}/capture")
    expect(again, 409)
    assert again.json()["error"] == {
        "type": "state_error", "code": "payment_unexpected_state",
        "message": again.json()["error"]["message"], "param": None,
    }


def test_cancel_paths(client):
    fresh = client.post("/v1/payments", json=payment_body()).json()
    r = client.post(f"/v1/payments/{fresh['id']}/cancel")
    expect(r, 200)
    assert r.json()["status"] == "canceled"
    expect(client.post(f"/v1/payments/{fresh['id']}/confirm"), 409)

    held = client.post("/v1/payments", json=payment_body(capture_method="manual", confirm=True)).json()
    r = client.post(f"/v1/payments/{held['id']}/cancel").json()
    assert r["status"] == "canceled"
    assert r["amount_capturable"] == 0

    done = client.post("/v1/payments", json=payment_body(confirm=True)).json()
    r = client.post(f"/v1/payments/{done['id']}/cancel")
    expect(r, 409)
    assert r.json()["error"]["type"] == "state_error"
    assert client.get(f"/v1/payments/{done['id']}").json()["status"] == "succeeded"


def test_confirm_twice_is_409_and_terminal_status_stays(client):
    pay = client.post("/v1/payments", json=payment_body(confirm=True)).json()
    r = client.post(f"/v1/payments/{pay['id']}/confirm")
    expect(r, 409)
    assert r.json()["error"]["code"] == "payment_unexpected_state"
    got = client.get(f"/v1/payments/{pay['id']}").json()
    assert got["status"] == "succeeded"
    assert len(got["attempts"]) == 1


def test_lists_paginate_newest_first_and_filter(client):
    ids = [client.post("/v1/payments", json=payment_body(100 + i, customer_id="cus_pg")).json()["id"]
           for i in range(5)]
    page1 = client.get("/v1/payments", params={"limit": 2}).json()
    assert page1["object"] == "list"
    assert page1["has_more"] is True
    assert [p["id"] for p in page1["data"]] == ids[::-1][:2]
    page2 = client.get("/v1/payments", params={"limit": 2, "starting_after": page1["data"][-1]["id"]}).json()
    assert [p["id"] for p in page2["data"]] == ids[::-1][2:4]
    page3 = client.get("/v1/payments", params={"limit": 2, "starting_after": page2["data"][-1]["id"]}).json()
    assert [p["id"] for p in page3["data"]] == ids[:1]
    assert page3["has_more"] is False
    filtered = client.get("/v1/payments", params={"customer_id": "cus_pg", "status": "requires_confirmation",
                                                  "limit": 100}).json()
    assert {p["id"] for p in filtered["data"]} == set(ids)
    assert client.get("/v1/payments", params={"status": "succeeded", "customer_id": "cus_pg"}).json()["data"] == []
    assert client.get("/v1/payments", params={"limit": 0}).json()["error"]["param"] == "limit"
    expect(client.get("/v1/payments", params={"limit": 101}), 400)


def test_events_filters_and_retrieve(client):
    pay = client.post("/v1/payments", json=payment_body(confirm=True)).json()
    by_object = client.get("/v1/events", params={"object_id": pay["id"]}).json()["data"]
    assert [e["type"] for e in by_object] == ["payment.succeeded", "payment.created"]
    only = client.get("/v1/events", params={"type": "payment.succeeded"}).json()["data"]
    assert all(e["type"] == "payment.succeeded" for e in only)
    assert only
    first_seq = by_object[-1]["seq"]
    after = client.get("/v1/events", params={"after_seq": first_seq}).json()["data"]
    # Oldest first from just after payment.created: at least its payment.succeeded.
    assert after, after
    assert after[0]["seq"] == first_seq + 1, after
    assert [e["seq"] for e in after] == list(range(first_seq + 1, first_seq + 1 + len(after)))
    assert by_object[0]["id"] in {e["id"] for e in after}
    one = client.get(f"/v1/events/{by_object[0]['id']}")
    expect(one, 200)
    assert one.json() == by_object[0]
    expect(client.get("/v1/events/evt_nope"), 404)


def test_event_seq_is_gap_free_per_merchant(client):
    for i in range(6):
        client.post("/v1/payments", json=payment_body(confirm=True, method=CARD_DECLINED if i % 2 else CARD_OK))
    seqs = sorted(e["seq"] for e in client.get("/v1/events", params={"limit": 100}).json()["data"])
    assert len(seqs) >= 12, seqs  # six payments, created + an outcome each
    assert seqs == list(range(1, len(seqs) + 1))
