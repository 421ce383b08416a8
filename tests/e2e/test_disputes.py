"""Disputes end to end: opened by the connector's webhook (card 4000000000000259),
answered with evidence (under review, then won or lost by webhook) or accepted,
the disputed amount held from the merchant's balance and released on a win."""

from __future__ import annotations

import json
import time

import pytest

from tests.support import db_fetch, expect, payment_body, sign_razorpay, sign_stripe, wait_for

CARD_DISPUTED = {"type": "card", "card": {"number": "4000000000000259"}}


def _disputed_payment(client, amount=3000, connector="mockstripe", customer="cus_dp"):
    pay = client.post("/v1/payments", json=payment_body(amount, method=CARD_DISPUTED, connector=connector,
                                                        customer_id=customer, confirm=True)).json()
    assert pay["status"] == "succeeded", pay
    dispute = wait_for(lambda: client.get("/v1/disputes", params={"payment_id": pay["id"]}).json()["data"])
    assert len(dispute) == 1
    return pay, dispute[0]


def _dispute_status(client, dispute_id, expected):
    def check():
        body = client.get(f"/v1/disputes/{dispute_id}").json()
        return body if body["status"] == expected else None

    return wait_for(check)


def _balance(client, currency="INR"):
    data = client.get("/v1/balance").json()["data"]
    return next(b for b in data if b["currency"] == currency)


def _types(client, object_id):
    return [e["type"] for e in client.get("/v1/events", params={"object_id": object_id}).json()["data"]][::-1]


@pytest.mark.parametrize("connector", ["mockstripe", "mockrazorpay"])
def test_dispute_opens_then_evidence_wins_and_releases_the_hold(client, connector):
    pay, dispute = _disputed_payment(client, 3000, connector)
    assert dispute["object"] == "dispute"
    assert dispute["id"].startswith("dp_")
    assert dispute["status"] == "needs_response"
    assert dispute["amount"] == 3000
    assert dispute["currency"] == "INR"
    assert dispute["connector"] == connector
    assert dispute["evidence"] == {"text": None, "submitted_at": None}
    opened = client.get("/v1/events", params={"object_id": dispute["id"]}).json()["data"]
    assert [e["type"] for e in opened] == ["dispute.opened"]
    held = _balance(client)
    assert held["disputed_held"] >= 3000
    assert held["available"] == held["received"] - held["refunded"] - held["disputed_held"] - held["disputed_lost"]
    # A disputed payment cannot be refunded as well.
    r = client.post("/v1/refunds", json={"payment_id": pay["id"]})
    expect(r, 409)
    assert r.json()["error"]["code"] == "charge_disputed"
    r = client.post(f"/v1/disputes/{dispute['id']}/evidence", json={"text": "Signed receipt. winning_evidence"})
    expect(r, 200)
    review = r.json()
    assert review["status"] == "under_review"
    assert review["evidence"]["text"].startswith("Signed receipt")
    assert review["evidence"]["submitted_at"]
    won = _dispute_status(client, dispute["id"], "won")
    assert won["amount"] == 3000
    assert _types(client, dispute["id"]) == ["dispute.opened", "dispute.won"]
    released = _balance(client)
    assert released["disputed_held"] == held["disputed_held"] - 3000
    assert released["available"] == held["available"] + 3000
    # Evidence on a decided dispute is refused.
    r = client.post(f"/v1/disputes/{dispute['id']}/evidence", json={"text": "more"})
    expect(r, 409)
    assert r.json()["error"]["code"] == "dispute_unexpected_state"


def test_losing_evidence_loses(client):
    _, dispute = _disputed_payment(client, 1500)
    before = _balance(client)
    client.post(f"/v1/disputes/{dispute['id']}/evidence", json={"text": "losing_evidence"})
    _dispute_status(client, dispute["id"], "lost")
    assert _types(client, dispute["id"]) == ["dispute.opened", "dispute.lost"]
    after = _balance(client)
    assert after["disputed_lost"] == before["disputed_lost"] + 1500
    assert after["disputed_held"] == before["disputed_held"] - 1500
    assert after["available"] == before["available"]


def test_accept_closes_the_dispute_and_late_verdicts_are_ignored(client, server, db_dsn):
    pay, dispute = _disputed_payment(client, 2000, customer="cus_accept")
    r = client.post(f"/v1/disputes/{dispute['id']}/accept")
    expect(r, 200)
    assert r.json()["status"] == "accepted"
    events = client.get("/v1/events", params={"object_id": dispute["id"], "type": "dispute.accepted"}).json()["data"]
    assert len(events) == 1
    assert events[0]["data"]["object"]["status"] == "accepted"
    for action, body in (("accept", None), ("evidence", {"text": "too late"})):
        r = client.post(f"/v1/disputes/{dispute['id']}/{action}", json=body)
        expect(r, 409)
        assert r.json()["error"]["code"] == "dispute_unexpected_state"
    # The connector's own "won" verdict arriving afterwards changes nothing.
    connector_id = db_fetch(db_dsn, "SELECT connector_dispute_id FROM disputes WHERE id = $1",
                            dispute["id"])[0]["connector_dispute_id"]
    body = json.dumps({"id": f"evt_late_{dispute['id']}", "type": "charge.dispute.closed",
                       "created": int(time.time()),
                       "data": {"object": {"id": connector_id, "amount": 2000, "currency": "inr", "status": "won",
                                           "metadata": {"payment_id": pay["id"], "dispute_id": dispute["id"]}}}}
                      ).encode()
    with server.client() as anon:
        expect(anon.post("/webhooks/mockstripe", content=body, headers=sign_stripe(body)), 200)
    row = wait_for(lambda: db_fetch(db_dsn, "SELECT status FROM webhook_inbox WHERE event_id = $1"
                                            " AND processed_at IS NOT NULL", f"evt_late_{dispute['id']}"))
    assert row[0]["status"] == "ignored"
    assert client.get(f"/v1/disputes/{dispute['id']}").json()["status"] == "accepted"
    assert _types(client, dispute["id"]) == ["dispute.opened", "dispute.accepted"]


def test_verdict_by_signed_webhook_and_duplicate_opening(client, server, db_dsn):
    pay, dispute = _disputed_payment(client, 2200, connector="mockrazorpay")
    connector_id = db_fetch(db_dsn, "SELECT connector_dispute_id FROM disputes WHERE id = $1",
                            dispute["id"])[0]["connector_dispute_id"]

    def razorpay(event, event_id, notes):
        body = json.dumps({"event": event, "created_at": int(time.time()), "x_event_id": event_id,
                           "payload": {"payment": {"entity": {"id": connector_id, "amount": 2200, "currency": "INR",
                                                              "status": "open", "notes": notes}}}}).encode()
        with server.client() as anon:
            expect(anon.post("/webhooks/mockrazorpay", content=body, headers=sign_razorpay(body)), 200)

    # The same dispute announced again under another event id: still one dispute.
    razorpay("payment.dispute.created", f"rzp_dup_{dispute['id']}", {"payment_id": pay["id"]})
    wait_for(lambda: db_fetch(db_dsn, "SELECT 1 FROM webhook_inbox WHERE event_id = $1 AND processed_at IS NOT NULL",
                              f"rzp_dup_{dispute['id']}"))
    assert len(client.get("/v1/disputes", params={"payment_id": pay["id"]}).json()["data"]) == 1
    # Evidence the connector cannot decide on leaves it under review ...
    r = client.post(f"/v1/disputes/{dispute['id']}/evidence", json={"text": "Delivery photo attached."})
    assert r.json()["status"] == "under_review"
    time.sleep(0.3)
    assert client.get(f"/v1/disputes/{dispute['id']}").json()["status"] == "under_review"
    # ... until the connector's verdict arrives.
    razorpay("payment.dispute.lost", f"rzp_lost_{dispute['id']}", {"payment_id": pay["id"]})
    _dispute_status(client, dispute["id"], "lost")
    assert _types(client, dispute["id"]) == ["dispute.opened", "dispute.lost"]


def test_dispute_lists_filters_and_404s(client):
    _, first = _disputed_payment(client, 1000)
    _, second = _disputed_payment(client, 1100)
    page = client.get("/v1/disputes", params={"limit": 1}).json()
    assert page["has_more"] is True
    assert page["data"][0]["id"] == second["id"]
    nxt = client.get("/v1/disputes", params={"limit": 1, "starting_after": second["id"]}).json()
    assert nxt["data"][0]["id"] == first["id"]
    client.post(f"/v1/disputes/{first['id']}/accept")
    accepted = client.get("/v1/disputes", params={"status": "accepted"}).json()["data"]
    assert [d["id"] for d in accepted] == [first["id"]]
    expect(client.get("/v1/disputes/dp_nope"), 404)
    expect(client.post("/v1/disputes/dp_nope/accept"), 404)
    expect(client.post("/v1/disputes/dp_nope/evidence", json={"text": "x"}), 404)
    r = client.post(f"/v1/disputes/{second['id']}/evidence", json={"text": ""})
    expect(r, 400)
    assert r.json()["error"]["param"] == "text"
    r = client.post(f"/v1/disputes/{second['id']}/accept", json={"why": "x"})
    expect(r, 400)
    assert r.json()["error"]["param"] == "why"


def test_verdict_before_its_dispute_opens_is_deferred_then_applied(client, server, db_dsn):
    """Reordered gateway webhooks: the 'lost' verdict arrives first, waits, and
    is applied once the dispute it decides has been opened."""
    pay = client.post("/v1/payments", json=payment_body(1800, connector="mockstripe", confirm=True)).json()
    dispute_ref = f"du_reordered_{pay['id']}"

    def send(stripe_type, event_id, status):
        body = json.dumps({"id": event_id, "type": stripe_type, "created": int(time.time()),
                           "data": {"object": {"id": dispute_ref, "amount": 1800, "currency": "inr",
                                               "status": status, "metadata": {"payment_id": pay["id"]}}}}).encode()
        with server.client() as anon:
            expect(anon.post("/webhooks/mockstripe", content=body, headers=sign_stripe(body)), 200)

    send("charge.dispute.closed", f"evt_verdict_{pay['id']}", "lost")
    wait_for(lambda: db_fetch(db_dsn, "SELECT last_error FROM webhook_inbox WHERE event_id = $1",
                              f"evt_verdict_{pay['id']}")[0]["last_error"])
    row = db_fetch(db_dsn, "SELECT processed_at, last_error FROM webhook_inbox WHERE event_id = $1",
                   f"evt_verdict_{pay['id']}")[0]
    assert row["processed_at"] is None
    assert row["last_error"].startswith("deferred")
    assert client.get("/v1/disputes", params={"payment_id": pay["id"]}).json()["data"] == []
    send("charge.dispute.created", f"evt_open_{pay['id']}", "needs_response")
    dispute = wait_for(lambda: client.get("/v1/disputes", params={"payment_id": pay["id"]}).json()["data"])[0]
    _dispute_status(client, dispute["id"], "lost")
    assert _types(client, dispute["id"]) == ["dispute.opened", "dispute.lost"]
    statuses = db_fetch(db_dsn, "SELECT status FROM webhook_inbox WHERE payment_id = $1 ORDER BY event_id", pay["id"])
    assert [r["status"] for r in statuses] == ["applied", "applied"]
