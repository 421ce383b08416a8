"""Simulated gateways end to end: every outcome of docs/api.md's simulator table,
webhook ingestion (signatures, duplicates, unknown payments), routing and fallback."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import (CARD_DECLINED, ServerProcess, CARD_NO_FUNDS, CARD_OK, UPI, db_fetch, expect, payment_body,
                           sign_razorpay, sign_stripe, wait_for)


def _status(client, pay_id, expected):
    def check():
        body = client.get(f"/v1/payments/{pay_id}").json()
        return body if body["status"] == expected else None

    return wait_for(check)


@pytest.mark.parametrize("connector", ["mockstripe", "mockrazorpay"])
def test_card_outcomes(client, connector):
    ok = client.post("/v1/payments", json=payment_body(method=CARD_OK, connector=connector, confirm=True)).json()
    assert ok["status"] == "succeeded"
    assert ok["connector"] == connector
    declined = client.post("/v1/payments", json=payment_body(method=CARD_DECLINED, connector=connector,
                                                             confirm=True)).json()
    assert declined["status"] == "failed"
    assert declined["last_error"]["code"] == "card_declined"
    broke = client.post("/v1/payments", json=payment_body(method=CARD_NO_FUNDS, connector=connector,
                                                          confirm=True)).json()
    assert broke["status"] == "failed"
    assert broke["last_error"]["code"] == "insufficient_funds"


@pytest.mark.parametrize("connector", ["mockstripe", "mockrazorpay"])
def test_upi_success_and_failure_arrive_by_webhook(client, connector):
    order = client.post("/v1/orders", json={"amount": 1500, "currency": "INR", "customer_id": "c1"}).json()
    ok = client.post("/v1/payments", json=payment_body(1500, method=UPI("success@upi"), connector=connector,
                                                       order_id=order["id"], confirm=True)).json()
    assert ok["status"] == "processing"
    assert ok["attempts"][0]["status"] == "started"
    bad = client.post("/v1/payments", json=payment_body(method=UPI("failure@upi"), connector=connector,
                                                        confirm=True)).json()
    assert bad["status"] == "processing"
    done = _status(client, ok["id"], "succeeded")
    assert done["amount_received"] == 1500
    assert done["attempts"][0]["status"] == "succeeded"
    assert client.get(f"/v1/orders/{order['id']}").json()["status"] == "paid"
    failed = _status(client, bad["id"], "failed")
    assert failed["attempts"][0]["status"] == "failed"
    types = [e["type"] for e in client.get("/v1/events", params={"object_id": ok["id"]}).json()["data"]]
    assert types == ["payment.succeeded", "payment.processing", "payment.created"]


def test_pending_upi_stays_processing_without_webhook(client):
    pay = client.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), confirm=True)).json()
    time.sleep(0.5)
    assert client.get(f"/v1/payments/{pay['id']}").json()["status"] == "processing"


def _stripe_event(pay, kind="payment_intent.succeeded", event_id=None):
    txn = pay["attempts"][-1]["connector_txn_id"]
    return json.dumps({"id": event_id or f"evt_test_{time.time_ns()}", "type": kind, "created": int(time.time()),
                       "data": {"object": {"id": txn, "amount": pay["amount"], "currency": "inr",
                                           "status": "succeeded", "metadata": {"payment_id": pay["id"]}}}}).encode()


def test_forged_stale_and_unsigned_webhooks_are_400_and_not_stored(server, client, db_dsn):
    pay = client.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), confirm=True)).json()
    body = _stripe_event(pay, event_id="evt_forged_1")
    with server.client() as anon:
        forged = anon.post("/webhooks/mockstripe", content=body, headers=sign_stripe(body, secret="whsec_wrong"))
        expect(forged, 400)
        assert forged.json()["error"]["code"] == "invalid_signature"
        stale = anon.post("/webhooks/mockstripe", content=body,
                          headers=sign_stripe(body, timestamp=int(time.time()) - 301))
        expect(stale, 400)
        assert stale.json()["error"]["code"] == "stale_signature"
        unsigned = anon.post("/webhooks/mockstripe", content=body)
        expect(unsigned, 400)
        tampered = anon.post("/webhooks/mockstripe", content=body.replace(b"succeeded", b"failed!!!"),
                             headers=sign_stripe(body))
        expect(tampered, 400)
        rzp_forged = anon.post("/webhooks/mockrazorpay", content=body, headers={"X-Razorpay-Signature": "00" * 32})
        expect(rzp_forged, 400)
        expect(anon.post("/webhooks/nope", content=body, headers=sign_stripe(body)), 404)
        bad_json = b"{nope"
        expect(anon.post("/webhooks/mockstripe", content=bad_json, headers=sign_stripe(bad_json)), 400)
        missing = json.dumps({"id": "evt_missing", "type": "payment_intent.succeeded"}).encode()
        r = anon.post("/webhooks/mockstripe", content=missing, headers=sign_stripe(missing))
        expect(r, 400)
        assert r.json()["error"]["param"]
        unknown_type = json.dumps({"id": "evt_u", "type": "charge.weird", "created": 1, "data": {"object": {"id": "x"}}}).encode()
        expect(anon.post("/webhooks/mockstripe", content=unknown_type,
                         headers=sign_stripe(unknown_type)), 400)
    assert db_fetch(db_dsn, "SELECT id FROM webhook_inbox WHERE event_id IN ('evt_forged_1', 'evt_missing', 'evt_u')") == []
    assert client.get(f"/v1/payments/{pay['id']}").json()["status"] == "processing"


def test_same_webhook_5x_sequential_and_concurrent_applies_once(server, client, db_dsn):
    for mode in ("sequential", "concurrent"):
        pay = client.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), confirm=True)).json()
        body = _stripe_event(pay, event_id=f"evt_dup_{mode}_{pay['id']}")
        headers = sign_stripe(body)

        def send(_):
            with server.client() as anon:
                return anon.post("/webhooks/mockstripe", content=body, headers=headers)

        if mode == "sequential":
            responses = [send(i) for i in range(5)]
        else:
            with ThreadPoolExecutor(5) as pool:
                responses = list(pool.map(send, range(5)))
        assert [r.status_code for r in responses] == [200] * 5
        assert sorted(r.json()["duplicate"] for r in responses) == [False, True, True, True, True]
        _status(client, pay["id"], "succeeded")
        rows = db_fetch(db_dsn, "SELECT status FROM webhook_inbox WHERE event_id = $1", f"evt_dup_{mode}_{pay['id']}")
        assert [r["status"] for r in rows] == ["applied"]
        events = client.get("/v1/events", params={"object_id": pay["id"], "type": "payment.succeeded"}).json()
        assert len(events["data"]) == 1


def test_late_webhook_never_moves_terminal_status(server, client, db_dsn):
    pay = client.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), confirm=True)).json()
    ok = _stripe_event(pay, event_id=f"evt_ok_{pay['id']}")
    late_fail = _stripe_event(pay, kind="payment_intent.payment_failed", event_id=f"evt_late_{pay['id']}")
    with server.client() as anon:
        expect(anon.post("/webhooks/mockstripe", content=ok, headers=sign_stripe(ok)), 200)
        _status(client, pay["id"], "succeeded")
        expect(anon.post("/webhooks/mockstripe", content=late_fail, headers=sign_stripe(late_fail)), 200)
    wait_for(lambda: db_fetch(db_dsn, "SELECT status FROM webhook_inbox WHERE event_id = $1 AND processed_at IS NOT NULL",
                              f"evt_late_{pay['id']}"))
    assert db_fetch(db_dsn, "SELECT status FROM webhook_inbox WHERE event_id = $1",
                    f"evt_late_{pay['id']}")[0]["status"] == "ignored"
    assert client.get(f"/v1/payments/{pay['id']}").json()["status"] == "succeeded"


def test_webhook_for_unknown_payment_is_kept_for_review(new_database, start_server):
    """Retried for the grace period (it may have overtaken its payment's commit), then kept aside."""
    server = start_server(new_database("paycast_orphan"), PAYCAST_WEBHOOK_UNMATCHED_GRACE_S="0.5")
    try:
        _orphan_is_kept(server, server.dsn)
    finally:
        server.stop()


def _orphan_is_kept(server, db_dsn):
    body = json.dumps({"event": "payment.captured", "created_at": int(time.time()), "x_event_id": "rzp_evt_orphan",
                       "payload": {"payment": {"entity": {"id": "pay_unknown_txn", "amount": 100, "currency": "INR",
                                                          "status": "captured", "notes": {"payment_id": "pay_nope"}}}}}).encode()
    with server.client() as anon:
        r = anon.post("/webhooks/mockrazorpay", content=body, headers=sign_razorpay(body))
        expect(r, 200)
    rows = wait_for(lambda: db_fetch(db_dsn, "SELECT status, raw_body FROM webhook_inbox WHERE event_id = 'rzp_evt_orphan'"
                                             " AND processed_at IS NOT NULL"))
    assert rows[0]["status"] == "unmatched"
    assert json.loads(rows[0]["raw_body"]) == json.loads(body)


def test_routing_priority_rules_and_pinning(client):
    assert client.get("/v1/routing").json()["strategy"] == "priority"
    r = client.put("/v1/routing", json={"strategy": "priority", "connectors": ["mockrazorpay", "mockstripe"],
                                        "rules": [{"payment_method_type": "upi", "connectors": ["mockstripe"]}]})
    expect(r, 200)
    assert client.get("/v1/routing").json()["connectors"] == ["mockrazorpay", "mockstripe"]
    card = client.post("/v1/payments", json=payment_body(confirm=True)).json()
    assert card["connector"] == "mockrazorpay"
    upi = client.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), confirm=True)).json()
    assert upi["connector"] == "mockstripe"
    pinned = client.post("/v1/payments", json=payment_body(connector="mockstripe", confirm=True)).json()
    assert pinned["connector"] == "mockstripe"
    bad = client.put("/v1/routing", json={"strategy": "random"})
    expect(bad, 400)
    assert bad.json()["error"]["param"] == "strategy"
    bad = client.put("/v1/routing", json={"strategy": "priority", "connectors": ["nope"]})
    expect(bad, 400)
    assert bad.json()["error"]["param"] == "connectors"


def test_volume_split_uses_both_connectors(client):
    client.put("/v1/routing", json={"strategy": "volume_split", "connectors": ["mockstripe", "mockrazorpay"],
                                    "weights": {"mockstripe": 50, "mockrazorpay": 50}})
    used = {client.post("/v1/payments", json=payment_body(confirm=True)).json()["connector"] for _ in range(30)}
    assert used == {"mockstripe", "mockrazorpay"}


@pytest.fixture(scope="module")
def steady_breakers(new_database):
    """A server whose breakers never open at flaky's 30% error rate, so routing is deterministic."""
    proc = ServerProcess(new_database("paycast_flaky"), PAYCAST_BREAKER_FAILURE_THRESHOLD="1.0").start()
    try:
        yield proc
    finally:
        proc.stop()


def test_flaky_falls_back_to_next_connector(steady_breakers):
    with steady_breakers.client(steady_breakers.create_merchant()) as client:
        _flaky_falls_back(client)


def test_open_circuit_routes_around_the_connector(new_database, start_server):
    server = start_server(new_database("paycast_breaker"), PAYCAST_FLAKY_ERROR_RATE="1.0",
                           PAYCAST_BREAKER_MIN_CALLS="5", PAYCAST_BREAKER_OPEN_S="60")
    try:
        with server.client(server.create_merchant()) as client:
            client.put("/v1/routing", json={"strategy": "priority", "connectors": ["flaky", "mockstripe"]})
            results = [client.post("/v1/payments", json=payment_body(confirm=True)).json() for _ in range(12)]
            states = {c["name"]: c["state"] for c in client.get("/v1/connectors").json()}
            assert states["flaky"] == "open"
            assert states["mockstripe"] == "closed"
            # Once open, flaky is tried last: the payment goes straight to mockstripe.
            assert [a["connector"] for a in results[-1]["attempts"]] == ["mockstripe"]
            assert results[-1]["status"] == "succeeded"
    finally:
        server.stop()


def _flaky_falls_back(client):
    client.put("/v1/routing", json={"strategy": "priority", "connectors": ["flaky", "mockstripe"]})
    results = [client.post("/v1/payments", json=payment_body(confirm=True)).json() for _ in range(60)]
    fell_back = [p for p in results if len(p["attempts"]) == 2]
    assert fell_back, "with a 30% error rate some payments must fall back"
    for p in fell_back:
        assert [a["connector"] for a in p["attempts"]] == ["flaky", "mockstripe"]
        assert p["attempts"][0]["status"] == "failed"
        assert p["attempts"][1]["status"] == "succeeded"
        assert p["status"] == "succeeded"
    # A timeout is not retried elsewhere (the charge may have happened): it stays processing, attempt unknown.
    for p in results:
        if p["status"] == "processing":
            assert p["attempts"][-1]["status"] == "unknown"
    connectors = {c["name"]: c for c in client.get("/v1/connectors").json()}
    assert connectors["flaky"]["attempts"] >= 60
    assert connectors["flaky"]["success_rate"] < 1
    assert set(connectors["flaky"]) == {"object", "name", "state", "success_rate", "latency_ms_p50", "attempts"}


def test_declines_are_never_retried(client):
    client.put("/v1/routing", json={"strategy": "priority", "connectors": ["mockstripe", "mockrazorpay"]})
    p = client.post("/v1/payments", json=payment_body(method=CARD_DECLINED, confirm=True)).json()
    assert p["status"] == "failed"
    assert len(p["attempts"]) == 1


def test_routing_put_requires_strategy_and_connectors(client):
    """PUT replaces the whole configuration: nothing is filled in silently (docs/api.md v1.1)."""
    before = client.get("/v1/routing").json()
    for body, param in [({"strategy": "priority"}, "connectors"), ({"strategy": "priority", "connectors": []},
                                                                   "connectors"),
                        ({"connectors": ["mockstripe"]}, "strategy"), ({}, "strategy")]:
        r = client.put("/v1/routing", json=body)
        expect(r, 400, note=body)
        assert r.json()["error"]["type"] == "invalid_request_error", body
        assert r.json()["error"]["param"] == param, body
    assert client.get("/v1/routing").json() == before
