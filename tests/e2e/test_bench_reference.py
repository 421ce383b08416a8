"""The benchmark's reference service (bench/reference/) does what it claims: the numbers
`make bench` divides by are only meaningful if the reference really stores the same rows.

fastapi and uvicorn come with the `test` extra (and the `bench` one).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.support import ROOT, db_fetch, expect, payment_body, sign_stripe

API_KEY = "sk_ref_test"


@pytest.fixture
def reference(new_database):
    dsn = new_database("reference_test")
    proc = subprocess.Popen([sys.executable, "-m", "bench.reference", "--dsn", dsn, "--api-key", API_KEY],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(proc.stderr), daemon=True).start()
    try:
        line = proc.stdout.readline()
        assert '"listening"' in line, "".join(errors)
        yield json.loads(line)["url"], dsn
    finally:
        proc.terminate()
        proc.wait(15)


def test_reference_create_confirm_idempotency_and_events(reference):
    url, dsn = reference
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as c:
        assert c.get("/ping").json() == {"status": "ok"}
        expect(httpx.post(url + "/v1/payments", json=payment_body()), 401)

        created = c.post("/v1/payments", json=payment_body())
        expect(created, 201)
        assert created.json()["status"] == "requires_confirmation"
        pay_id = created.json()["id"]
        confirmed = c.post(f"/v1/payments/{pay_id}/confirm", json={}, headers={"Idempotency-Key": "k1"})
        body = confirmed.json()
        expect(confirmed, 200)
        assert body["status"] == "succeeded"
        assert body["amount_received"] == 1000
        assert [a["status"] for a in body["attempts"]] == ["succeeded"]
        replay = c.post(f"/v1/payments/{pay_id}/confirm", json={}, headers={"Idempotency-Key": "k1"})
        assert replay.headers.get("Idempotent-Replayed") == "true"
        assert replay.json() == body
        again = c.post(f"/v1/payments/{pay_id}/confirm", json={}, headers={"Idempotency-Key": "k2"})
        expect(again, 409)
        assert again.json()["error"]["code"] == "payment_unexpected_state"

        one_shot = c.post("/v1/payments", json=payment_body(confirm=True))
        expect(one_shot, 201)
        assert one_shot.json()["status"] == "succeeded"

        before = c.get("/stats").json()["round_trips"]
        c.post("/v1/payments", json=payment_body(confirm=True))
        assert c.get("/stats").json()["round_trips"] - before >= 10  # statements, BEGIN/COMMIT, pool resets

    events = db_fetch(dsn, "SELECT seq, type FROM events ORDER BY seq")
    assert [e["seq"] for e in events] == list(range(1, 7))  # gap-free per merchant
    assert [e["type"] for e in events].count("payment.succeeded") == 3
    attempts = db_fetch(dsn, "SELECT status FROM payment_attempts WHERE payment_id = $1", pay_id)
    assert [a["status"] for a in attempts] == ["succeeded"]


def test_reference_stores_signed_webhooks_once(reference):
    url, dsn = reference
    body = json.dumps({"id": "evt_ref_1", "type": "payment_intent.succeeded", "created": int(time.time()),
                       "data": {"object": {"id": "pi_1", "amount": 1000, "currency": "INR"}}}).encode()
    first = httpx.post(url + "/webhooks/mockstripe", content=body, headers=sign_stripe(body))
    expect(first, 200)
    assert first.json() == {"received": True, "duplicate": False}
    dup = httpx.post(url + "/webhooks/mockstripe", content=body, headers=sign_stripe(body))
    expect(dup, 200)
    assert dup.json()["duplicate"] is True
    bad = httpx.post(url + "/webhooks/mockstripe", content=body, headers=sign_stripe(body, secret="whsec_wrong"))
    expect(bad, 400)
    stale = httpx.post(url + "/webhooks/mockstripe", content=body,
                       headers=sign_stripe(body, timestamp=int(time.time()) - 3600))
    expect(stale, 400)
    rows = db_fetch(dsn, "SELECT event_id, event_type FROM webhook_inbox")
    assert rows == [{"event_id": "evt_ref_1", "event_type": "payment_intent.succeeded"}]


def test_reference_applies_a_webhook_in_the_request_with_apply(reference):
    """``?apply=1`` (bench_compare's ``webhooks`` flow): a new outcome moves a processing payment
    once, in the request; a late one (another event id) and a duplicate move nothing."""
    url, dsn = reference
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as c:
        created = c.post("/v1/payments", json={"amount": 1000, "currency": "INR", "confirm": True,
                                               "payment_method": {"type": "upi", "upi": {"vpa": "pending@upi"}}})
    expect(created, 201)
    payment = created.json()
    assert payment["status"] == "processing"

    def webhook(event_id: str) -> httpx.Response:
        body = json.dumps({"id": event_id, "type": "payment_intent.succeeded", "created": int(time.time()),
                           "data": {"object": {"id": payment["attempts"][0]["connector_txn_id"], "amount": 1000,
                                               "currency": "inr", "metadata": {"payment_id": payment["id"]}}}}
                          ).encode()
        return httpx.post(url + "/webhooks/mockstripe?apply=1", content=body, headers=sign_stripe(body))

    for event_id, duplicate in (("evt_apply_1", False), ("evt_apply_1", True), ("evt_apply_2", False)):
        answer = webhook(event_id)
        expect(answer, 200)
        assert answer.json() == {"received": True, "duplicate": duplicate}
    rows = db_fetch(dsn, "SELECT status, amount_received FROM payments WHERE id = $1", payment["id"])
    assert rows == [{"status": "succeeded", "amount_received": 1000}]
    attempts = db_fetch(dsn, "SELECT status FROM payment_attempts WHERE payment_id = $1", payment["id"])
    assert [a["status"] for a in attempts] == ["succeeded"]
    events = db_fetch(dsn, "SELECT type FROM events WHERE object_id = $1 ORDER BY seq", payment["id"])
    assert [e["type"] for e in events] == ["payment.created", "payment.processing", "payment.succeeded"]
    inbox = db_fetch(dsn, "SELECT event_id, processed_at IS NOT NULL AS processed FROM webhook_inbox ORDER BY event_id")
    assert inbox == [{"event_id": "evt_apply_1", "processed": True}, {"event_id": "evt_apply_2", "processed": True}]
