"""Rate limiting, request ids, and secrets that never leave: not in logs, not in
responses, not in the database."""

from __future__ import annotations

import pytest

from tests.support import ServerProcess, db_fetch, expect, payment_body

CARD = "4000000000000002"


@pytest.fixture(scope="module")
def limited(new_database):
    # A slow refill (0.2 token/s): even on a loaded machine the 12 requests below
    # come faster than tokens return, so the burst of 5 runs out for sure.
    proc = ServerProcess(new_database("paycast_limits"), PAYCAST_RATE_LIMIT_RPS="0.2", PAYCAST_RATE_LIMIT_BURST="5",
                         PAYCAST_LOG_LEVEL="DEBUG").start()
    try:
        yield proc
    finally:
        proc.stop()


def test_rate_limit_per_api_key_with_retry_after(limited):
    key_a, key_b = limited.create_merchant("a"), limited.create_merchant("b")
    with limited.client(key_a) as a, limited.client(key_b) as b:
        codes = [a.get("/v1/payments").status_code for _ in range(12)]
        assert codes[:5] == [200] * 5, codes
        assert codes.count(429) >= 5, codes
        refused = a.get("/v1/payments")
        expect(refused, 429)
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert int(refused.headers["Retry-After"]) >= 1
        expect(b.get("/v1/payments"), 200)  # another key has its own bucket


def test_request_id_is_echoed_or_made(client):
    assert client.get("/v1/payments", headers={"X-Request-Id": "trace-123"}).headers["Request-Id"] == "trace-123"
    assert client.get("/v1/payments").headers["Request-Id"].startswith("req_")


def test_secrets_never_in_logs_responses_or_database(limited):
    api_key = limited.create_merchant("secretive")
    with limited.client(api_key) as c:
        c.post("/v1/payments", json=payment_body(method={"type": "card", "card": {"number": CARD}}, confirm=True))
        bad = c.post("/v1/payments", json=payment_body(method={"type": "card", "card": {"number": CARD[:-1] + "3"}}))
        expect(bad, 400)
        assert CARD[:-1] not in bad.text
        listed = c.get("/v1/payments").text
        assert CARD not in listed
        assert CARD[:6] not in listed
        assert CARD[-4:] in listed
        events = c.get("/v1/events").text
        assert CARD not in events
    logs = "".join(limited.stderr_lines)
    assert CARD not in logs
    assert CARD[:-1] not in logs
    assert api_key not in logs
    for table, column in (("payments", "payment_method"), ("events", "data"), ("idempotency_keys", "response_body"),
                          ("webhook_inbox", "raw_body")):
        rows = db_fetch(limited.dsn, f"SELECT count(*) AS n FROM {table} WHERE {column}::text LIKE $1", f"%{CARD}%")
        assert rows[0]["n"] == 0, table
    assert db_fetch(limited.dsn, "SELECT count(*) AS n FROM merchants WHERE api_key_hash = $1", api_key)[0]["n"] == 0


def test_info_logs_and_spans_tell_what_happened_and_never_a_secret(new_database):
    """INFO lines for every state change and webhook (in and out), and console spans, never
    carry a card number, an API key, the admin token, an endpoint or connector secret."""
    import json
    import time

    from tests.receiver import Receiver
    from tests.support import ADMIN_TOKEN, UPI, sign_stripe, wait_for

    server = ServerProcess(new_database("paycast_logs"), keep_stdout=True, PAYCAST_LOG_LEVEL="INFO",
                           PAYCAST_OTEL_EXPORTER="console", PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true").start()
    try:
        api_key = server.create_merchant("logged")
        with Receiver() as receiver, server.client(api_key) as c:
            endpoint = c.post("/v1/webhook_endpoints", json={"url": receiver.url, "enabled_events": ["*"]}).json()
            card = c.post("/v1/payments", json=payment_body(method={"type": "card", "card": {"number": CARD}},
                                                            confirm=True)).json()
            upi = c.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), confirm=True)).json()
            body = json.dumps({"id": "evt_logged_1", "type": "payment_intent.succeeded", "created": int(time.time()),
                               "data": {"object": {"id": upi["attempts"][-1]["connector_txn_id"], "amount": 1000,
                                                   "currency": "inr", "status": "succeeded",
                                                   "metadata": {"payment_id": upi["id"]}}}}).encode()
            signed = sign_stripe(body)
            expect(c.post("/webhooks/mockstripe", content=body, headers=signed), 200)
            wait_for(lambda: c.get(f"/v1/payments/{upi['id']}").json()["status"] == "succeeded")
            wait_for(lambda: len(receiver.received) >= 4)
            delivered_signature = receiver.received[0].headers["webhook-signature"]
        wait_for(lambda: any('"name": "webhook send"' in line for line in server.stdout_lines))
    finally:
        server.stop()
    logs = "".join(server.stderr_lines)
    spans = "".join(server.stdout_lines)
    infos = [json.loads(line)["msg"] for line in server.stderr_lines
             if line.startswith("{") and json.loads(line)["level"] == "info"]
    # What happened, one line each: state changes (from → to), webhooks received, applied, sent.
    assert any(m.startswith(f"payment {card['id']}: processing → failed") for m in infos), infos
    assert any(m.startswith(f"payment {upi['id']}: processing → succeeded") for m in infos), infos
    assert any(m.startswith("webhook received: mockstripe evt_logged_1") for m in infos), infos
    assert any(" applied: mockstripe payment.succeeded for " + upi["id"] in m for m in infos), infos
    assert any(m.startswith("webhook wd_") and "→ succeeded" in m for m in infos), infos
    # Never a secret, in the logs or in the spans.
    for text in (logs, spans):
        for secret in (CARD, CARD[:-1], api_key, ADMIN_TOKEN, endpoint["secret"], "whsec_dev_mockstripe",
                       signed["Stripe-Signature"].split("v1=")[1], delivered_signature.split(",", 1)[1]):
            assert secret not in text
