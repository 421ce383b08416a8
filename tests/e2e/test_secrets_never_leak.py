"""Secrets never leave: after a full flow through a real connector account (the
fake Razorpay: account, order, Checkout, webhook, capture, refund, rotation,
disable), the server's whole log (at DEBUG), its trace spans, every read of the
API, the admin inbox, /metrics, the outgoing webhooks sent, and the events and
other rows in the database hold no credential, webhook secret, outgoing endpoint secret
(after its one showing at creation) or key of the ring.
"""

from __future__ import annotations

import json
import secrets

import pytest

from tests.fakes.fake_razorpay import FakeRazorpay
from tests.receiver import Receiver
from tests.support import ADMIN_TOKEN, TEST_SECRETS_KEY, ServerProcess, db_fetch, expect, stop_all, wait_for

AMOUNT = 49900


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_full_flow_leaks_no_secret(new_database):
    dsn = new_database("paycast_leak")
    with FakeRazorpay(hang_s=3) as fake, Receiver() as receiver:
        # DEBUG logs on stderr, every trace span (console exporter) on stdout: both are grepped.
        server = ServerProcess(dsn, keep_stdout=True, PAYCAST_RAZORPAY_API_BASE=fake.url, PAYCAST_LOG_LEVEL="DEBUG",
                               PAYCAST_OTEL_EXPORTER="console", PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true").start()
        try:
            secrets_seen, reads = _flow(server, fake, receiver)
            reads += [request.body.decode() + json.dumps(request.headers) for request in receiver.received]
        finally:
            stop_all([server])
        log = "".join(server.stderr_lines) + "".join(server.stdout_lines)
        rows = [json.dumps(r, default=str) for table in ("events", "webhook_inbox", "payments", "payment_attempts",
                                                         "refunds", "idempotency_keys", "paycast_secrets")
                for r in db_fetch(dsn, f"SELECT * FROM {table}")]
    assert "webhook received: razorpay/" in log  # the log was really written at DEBUG/INFO
    assert "connector razorpay authorize" in log  # and the spans of the connector calls
    for name, secret in secrets_seen.items():
        assert secret not in log, f"{name} in the server log"
        for text in reads:
            assert secret not in text, f"{name} in a read: {text[:200]}"
        for row in rows:
            assert secret not in row, f"{name} in the database: {row[:200]}"


def _flow(server: ServerProcess, fake: FakeRazorpay, receiver: Receiver) -> tuple[dict[str, str], list[str]]:
    api_key = server.create_merchant()
    first, second = fake.add_account(), fake.add_account()
    webhook_secret, rotated_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    reads: list[str] = []
    with server.client(api_key) as client, server.client(ADMIN_TOKEN) as admin:
        endpoint = client.post("/v1/webhook_endpoints", json={"url": receiver.url, "enabled_events": ["*"]}).json()
        account = client.post("/v1/connector_accounts", headers={"Idempotency-Key": "mca-1"}, json={
            "connector": "razorpay", "webhook_secret": webhook_secret,
            "credentials": {"key_id": first.key_id, "key_secret": first.key_secret}})
        expect(account, 201)
        account = account.json()
        reads.append(json.dumps(account))
        first.webhook_url, first.webhook_secret = server.url + account["webhook_path"], webhook_secret
        # A refused rotation (wrong secret) and a bad body: their errors must not echo.
        for body in ({"credentials": {"key_id": second.key_id, "key_secret": "bad" + second.key_secret}},
                     {"credentials": {"key_id": "nope", "key_secret": second.key_secret}}):
            reads.append(client.post(f"/v1/connector_accounts/{account['id']}", json=body).text)
        payment = client.post("/v1/payments", json={
            "amount": AMOUNT, "currency": "INR", "payment_method": {"type": "upi"}, "connector": "razorpay",
            "capture_method": "manual", "confirm": True}).json()
        assert payment["status"] == "requires_action", payment
        fake.pay(payment["next_action"]["connector_sdk"]["data"]["order_id"], method="card")
        wait_for(lambda: client.get(f"/v1/payments/{payment['id']}").json()["status"] == "requires_capture")
        expect(client.post(f"/v1/payments/{payment['id']}/capture"), 200)
        refund = client.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 100})
        assert refund.status_code in (200, 201), refund.text
        # Rotate everything, then disable: in-flight work still settles through the old account's secret.
        rotated = client.post(f"/v1/connector_accounts/{account['id']}", json={
            "credentials": {"key_id": second.key_id, "key_secret": second.key_secret},
            "webhook_secret": rotated_secret})
        expect(rotated, 200)
        reads.append(rotated.text)
        reads.append(client.delete(f"/v1/connector_accounts/{account['id']}").text)
        wait_for(lambda: receiver.received, timeout=15)
        for path in (f"/v1/payments/{payment['id']}", "/v1/payments", "/v1/events?limit=100", "/v1/refunds",
                     "/v1/connector_accounts", f"/v1/connector_accounts/{account['id']}", "/v1/connectors",
                     "/v1/routing", "/v1/webhook_endpoints", f"/v1/webhook_endpoints/{endpoint['id']}",
                     f"/v1/webhook_endpoints/{endpoint['id']}/deliveries"):
            reads.append(client.get(path).text)
        reads.append(client.post("/v1/connector_accounts", headers={"Idempotency-Key": "mca-1"}, json={
            "connector": "razorpay", "webhook_secret": webhook_secret,
            "credentials": {"key_id": first.key_id, "key_secret": first.key_secret}}).text)  # the replay
        inbox = admin.get("/admin/inbox?limit=100")
        reads.append(inbox.text)
        reads += [admin.get(f"/admin/inbox/{item['id']}").text for item in inbox.json()["data"]]
        reads.append(admin.get("/metrics").text)
        reads.append(admin.get("/debug/tasks").text)
    seen = {"razorpay key_secret": first.key_secret, "rotated key_secret": second.key_secret,
            "connector webhook secret": webhook_secret, "rotated webhook secret": rotated_secret,
            "outgoing endpoint secret": endpoint["secret"], "PAYCAST_SECRETS_KEY": TEST_SECRETS_KEY}
    return seen, reads
