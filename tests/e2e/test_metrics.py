"""``/metrics`` after a mixed run: every family an on-call engineer relies on is
exposed, parses with prometheus_client's own parser, and moved."""

from __future__ import annotations

import json
import time

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.realtime_support import connect, events, http, token, welcome
from tests.receiver import Receiver
from tests.support import (CARD_DECLINED, CARD_OK, UPI, ServerProcess, expect, payment_body, sign_razorpay, sign_stripe,
                           wait_for)


@pytest.fixture
def metrics_server(new_database):
    server = ServerProcess(new_database("paycast_metrics"), PAYCAST_WEBHOOK_UNMATCHED_GRACE_S="0",
                           PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true").start()
    try:
        yield server
    finally:
        server.stop()


def scrape(server) -> dict[str, list]:
    """``{sample name: [(labels, value), ...]}`` of one scrape, parsed by prometheus_client."""
    with server.client() as c:
        r = c.get("/metrics")
    expect(r, 200)
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(samples: dict, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


async def test_every_family_moves_after_a_mixed_run(metrics_server):
    server = metrics_server
    with Receiver() as receiver:
        async with http(server, server.create_merchant("metrics")) as api:
            r = await api.post("/v1/webhook_endpoints", json={"url": receiver.url, "enabled_events": ["*"]})
            expect(r, 201)
            tok = await token(api, "cus_metrics")
            async with connect(server, tok) as ws:
                await welcome(ws)
                paid = (await api.post("/v1/payments", json=payment_body(
                    500, customer_id="cus_metrics", confirm=True))).json()
                declined = (await api.post("/v1/payments", json=payment_body(
                    600, method=CARD_DECLINED, confirm=True))).json()
                assert paid["status"] == "succeeded"
                assert declined["status"] == "failed"
                await events(ws, 2)  # created, succeeded reached the client
                # Two-step confirm, a refund, a UPI payment settled by the simulator's webhook.
                intent = (await api.post("/v1/payments", json=payment_body(700))).json()
                assert (await api.post(f"/v1/payments/{intent['id']}/confirm")).json()["status"] == "succeeded"
                refund = (await api.post("/v1/refunds", json={"payment_id": paid["id"], "amount": 100})).json()
                assert refund["status"] in ("pending", "succeeded"), refund
                upi = (await api.post("/v1/payments", json=payment_body(
                    800, method=UPI("success@upi"), confirm=True))).json()
                assert upi["status"] == "processing", upi
                account = (await api.post("/v1/accounts", json={"customer_id": "cus_w", "currency": "INR"})).json()
                r = await api.post(f"/v1/accounts/{account['id']}/deposits",
                                   json={"amount": 900, "payment_method": CARD_OK})
                expect(r, 201)
                with trio.fail_after(15):
                    while (await api.get(f"/v1/payments/{upi['id']}")).json()["status"] != "succeeded":
                        await trio.sleep(0.05)
                # The merchant's endpoint must still be listening while its deliveries go out.
                with trio.fail_after(15):
                    while value(scrape(server), "paycast_webhook_deliveries", status="succeeded") < 6:
                        await trio.sleep(0.1)

    # A forged webhook and one for a payment nobody knows (kept as unmatched).
    with server.client() as anon:
        body = json.dumps({"id": "evt_forged_metrics", "type": "payment_intent.succeeded",
                           "created": int(time.time()), "data": {"object": {"id": "x"}}}).encode()
        expect(anon.post("/webhooks/mockstripe", content=body,
                         headers=sign_stripe(body, secret="whsec_wrong")), 400)
        orphan = json.dumps({"event": "payment.captured", "created_at": int(time.time()),
                             "x_event_id": "rzp_evt_metrics_orphan",
                             "payload": {"payment": {"entity": {"id": "pay_nobody", "amount": 1, "currency": "INR",
                                                                "status": "captured",
                                                                "notes": {"payment_id": "pay_nobody"}}}}}).encode()
        expect(anon.post("/webhooks/mockrazorpay", content=orphan, headers=sign_razorpay(orphan)), 200)

    m = wait_for(lambda: (s := scrape(server)) and value(s, "paycast_webhook_inbox_rows", status="unmatched") >= 1
                 and value(s, "paycast_webhook_deliveries", status="succeeded") >= 6 and s)

    # State changes, from → to, by object.
    assert value(m, "paycast_transitions_total", object="payment", from_status="new",
                 to_status="requires_confirmation") >= 1
    # Every confirm passes through processing (the intent is committed before any connector call).
    assert value(m, "paycast_transitions_total", object="payment", from_status="requires_confirmation",
                 to_status="processing") >= 1
    assert value(m, "paycast_transitions_total", object="payment", from_status="processing",
                 to_status="failed") >= 1
    assert value(m, "paycast_transitions_total", object="payment", from_status="processing",
                 to_status="succeeded") >= 1
    assert value(m, "paycast_transitions_total", object="refund", from_status="new", to_status="pending") >= 1
    assert value(m, "paycast_transitions_total", object="transaction", from_status="new", to_status="pending") >= 1
    # Connector calls by outcome, with latency.
    assert value(m, "paycast_connector_calls_total", operation="authorize", outcome="succeeded") >= 3
    assert value(m, "paycast_connector_calls_total", operation="authorize", outcome="declined") >= 1
    assert value(m, "paycast_connector_calls_total", operation="authorize", outcome="pending") >= 1
    assert value(m, "paycast_connector_calls_total", operation="refund") >= 1
    assert value(m, "paycast_connector_call_seconds_count", operation="authorize") >= 5
    # Gateway webhooks: received, signature failures, receive → apply latency.
    assert value(m, "paycast_gateway_webhooks_received_total", result="new") >= 2
    assert value(m, "paycast_gateway_webhook_signature_failures_total", connector="mockstripe",
                 code="invalid_signature") == 1
    assert value(m, "paycast_gateway_webhook_apply_latency_seconds_count", result="applied") >= 1
    assert value(m, "paycast_gateway_webhook_apply_latency_seconds_count", result="unmatched") >= 1
    # Inbox by status and its oldest pending age; outgoing deliveries by outcome and outbox lag.
    assert value(m, "paycast_webhook_inbox_rows", status="applied") >= 1
    assert "paycast_webhook_inbox_lag_seconds" in m
    assert "paycast_webhook_inbox_pending" in m
    assert ("dead",) in {(lab["status"],) for lab, _ in m["paycast_webhook_inbox_rows"]}
    assert value(m, "paycast_webhook_delivery_attempts_total", outcome="succeeded") >= 6
    assert value(m, "paycast_webhook_delivery_seconds_count") >= 6
    assert "paycast_webhook_outbox_lag_seconds" in m
    # Realtime: frames written (and the connection gauge and slow-consumer counter exist).
    assert value(m, "paycast_realtime_messages_sent_total") >= 3  # welcome + 2 events
    assert "paycast_realtime_connections" in m
    assert "paycast_realtime_slow_consumer_closes_total" in m
    # Database units of work with latency, by unit and outcome.
    assert value(m, "paycast_db_unit_seconds_count", unit="payments.create_and_begin", outcome="ok") >= 1
    assert value(m, "paycast_db_unit_seconds_count", unit="inbox.apply", outcome="ok") >= 1
    assert value(m, "paycast_database_up") == 1
    # Collector pauses are timed (at least the full collection at start-up).
    assert value(m, "paycast_gc_pause_seconds_count") >= 1
    # Actors: the deepest mailbox seen (the run sent messages to payment actors).
    assert value(m, "paycast_actor_mailbox_high_water", kind="payment") >= 1
    # Breakers and stuck payments are exposed.
    assert value(m, "paycast_connector_circuit_open", connector="mockstripe", state="closed") == 1
    assert value(m, "paycast_payments_stuck") == 0
