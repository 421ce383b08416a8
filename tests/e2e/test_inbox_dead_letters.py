"""Incoming webhook inbox: a webhook whose apply keeps failing is retried with
backoff, ends as a dead letter, is listed by /admin/inbox, and is applied
exactly once when replayed after its cause is fixed."""

from __future__ import annotations

import json
import time

import pytest

from tests.support import ADMIN_TOKEN, UPI, ServerProcess, db_fetch, expect, payment_body, sign_stripe, wait_for

# Breaks exactly one payment's updates, as a bug or a bad row would: a real
# failure inside the apply transaction, fixed later by dropping the trigger.
BREAK = """
CREATE OR REPLACE FUNCTION test_break_payment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id IN (SELECT id FROM test_broken) THEN
    RAISE EXCEPTION 'injected failure for %', NEW.id;
  END IF;
  RETURN NEW;
END $$;
"""


@pytest.fixture(scope="module")
def inbox_server(new_database):
    proc = ServerProcess(new_database("paycast_inbox"), PAYCAST_INBOX_RETRY_SCHEDULE="0,1,1").start()
    db_fetch(proc.dsn, "CREATE TABLE test_broken (id text PRIMARY KEY)")
    db_fetch(proc.dsn, BREAK)
    db_fetch(proc.dsn, "CREATE TRIGGER test_break BEFORE UPDATE ON payments FOR EACH ROW"
                       " EXECUTE FUNCTION test_break_payment()")
    yield proc
    proc.stop()


def _stripe_succeeded(pay: dict, event_id: str) -> bytes:
    return json.dumps({"id": event_id, "type": "payment_intent.succeeded", "created": int(time.time()),
                       "data": {"object": {"id": pay["attempts"][-1]["connector_txn_id"], "amount": pay["amount"],
                                           "currency": "inr", "status": "succeeded",
                                           "metadata": {"payment_id": pay["id"]}}}}).encode()


def test_failing_webhook_ends_dead_is_listed_and_replayed_once(inbox_server):
    server = inbox_server
    api_key = server.create_merchant()
    with server.client(api_key) as c, server.client(ADMIN_TOKEN) as admin:
        pay = c.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), connector="mockstripe",
                                                       confirm=True)).json()
        assert pay["status"] == "processing"
        db_fetch(server.dsn, "INSERT INTO test_broken VALUES ($1)", pay["id"])
        event_id = f"evt_dead_{pay['id']}"
        body = _stripe_succeeded(pay, event_id)
        expect(c.post("/webhooks/mockstripe", content=body, headers=sign_stripe(body)), 200)

        def dead_item():
            page = admin.get("/admin/inbox", params={"status": "dead", "connector": "mockstripe"}).json()
            return next((i for i in page["data"] if i["event_id"] == event_id), None)

        item = wait_for(dead_item, timeout=20)
        # Schedule 0,1,1: three retries after the first failure, then dead.
        assert item["object"] == "inbox_item"
        assert item["id"].startswith("whi_")
        assert item["event_type"] == "payment_intent.succeeded"
        assert item["payment_id"] == pay["id"]
        assert item["attempts"] == 4
        assert "injected failure" in item["last_error"]
        assert item["processed_at"] is not None
        assert admin.get(f"/admin/inbox/{item['id']}").json()["status"] == "dead"
        # Not retried any more.
        time.sleep(1.5)
        assert admin.get(f"/admin/inbox/{item['id']}").json()["attempts"] == 4
        assert c.get(f"/v1/payments/{pay['id']}").json()["status"] == "processing"
        metrics = c.get("/metrics").text
        assert any(line.startswith("paycast_webhook_inbox_dead ") and float(line.split()[1]) >= 1
                   for line in metrics.splitlines())

        # Replaying before the cause is fixed: tried once more, pending again with backoff.
        again = admin.post(f"/admin/inbox/{item['id']}/replay")
        expect(again, 200)
        assert again.json()["status"] == "pending", again.text
        assert "injected failure" in again.json()["last_error"]

        db_fetch(server.dsn, "DELETE FROM test_broken WHERE id = $1", pay["id"])  # the cause is fixed
        replayed = admin.post(f"/admin/inbox/{item['id']}/replay")
        expect(replayed, 200)
        assert replayed.json()["status"] == "applied"
        assert c.get(f"/v1/payments/{pay['id']}").json()["status"] == "succeeded"
        # Exactly once: a second replay is refused, and only one event was written.
        refused = admin.post(f"/admin/inbox/{item['id']}/replay")
        expect(refused, 409)
        assert refused.json()["error"]["type"] == "state_error"
        events = c.get("/v1/events", params={"object_id": pay["id"], "type": "payment.succeeded"}).json()
        assert len(events["data"]) == 1


def test_admin_inbox_list_pages_filters_and_auth(inbox_server):
    server = inbox_server
    api_key = server.create_merchant()
    with server.client(api_key) as c, server.client(ADMIN_TOKEN) as admin:
        ids = []
        for i in range(3):
            pay = c.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), connector="mockstripe",
                                                           confirm=True)).json()
            body = _stripe_succeeded(pay, f"evt_page_{pay['id']}")
            expect(c.post("/webhooks/mockstripe", content=body, headers=sign_stripe(body)), 200)
            ids.append(pay["id"])
        first = admin.get("/admin/inbox", params={"limit": 2, "connector": "mockstripe"}).json()
        assert first["object"] == "list"
        assert len(first["data"]) == 2
        assert first["has_more"] is True
        # Newest first: the last webhook sent leads.
        assert first["data"][0]["payment_id"] == ids[-1]
        second = admin.get("/admin/inbox", params={"limit": 2, "connector": "mockstripe",
                                                   "starting_after": first["data"][-1]["id"]}).json()
        assert second["data"]
        assert second["data"][0]["payment_id"] == ids[0]
        assert {i["id"] for i in first["data"]}.isdisjoint(i["id"] for i in second["data"])
        assert admin.get("/admin/inbox", params={"connector": "mockrazorpay"}).json()["data"] == []
        bad = admin.get("/admin/inbox", params={"status": "nonsense"})
        expect(bad, 400)
        assert bad.json()["error"]["param"] == "status"
        expect(admin.get("/admin/inbox/whi_missing"), 404)
        expect(admin.post("/admin/inbox/whi_missing/replay"), 404)
        # Merchant keys are not admin tokens.
        expect(c.get("/admin/inbox"), 401)
        expect(c.get(f"/admin/inbox/{first['data'][0]['id']}"), 401)
        expect(c.post(f"/admin/inbox/{first['data'][0]['id']}/replay"), 401)
