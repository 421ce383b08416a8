"""v1.2 payments side, end to end against localstripe (the Stripe stand-in): what a
payment waiting for its customer does, and what never reaches a real gateway.

- the abandonment rule: a payment left in ``requires_action`` past
  ``PAYCAST_ACTION_DEADLINE_S`` is asked at the gateway; still waiting → canceled
  there, then ``canceled`` with ``cancellation_reason: "abandoned"``; paid
  meanwhile (its webhook lost) → settled from what the gateway says;
- ``payment.requires_action`` with its ``next_action`` in the event log, to an
  outgoing webhook endpoint and to the customer's realtime device;
- token methods and card numbers: a raw number pinned to a real connector is a
  400 ``raw_card_data_not_allowed`` and nothing reaches the gateway; a token
  pins the payment to stripe; ``return_url`` validation;
- ``run.py check`` holds after all of it.

No webhook registration at localstripe points at these merchants' accounts, so
everything here is learnt by asking the gateway (the reconciler), never from
localstripe's own events.
"""

from __future__ import annotations

import json
import secrets
from contextlib import closing

import pytest
import trio

from tests.realtime_support import connect, frame, http, token, welcome
from tests.receiver import Receiver
from tests.support import ServerProcess, db_fetch, expect, run_check, stop_all, wait_for

AMOUNT = 4200
THREE_D_SECURE = "4000002500003155"  # Stripe's test card that always asks for 3-D Secure
DEADLINE_S = 3


@pytest.fixture(scope="module")
def action_dsn(new_database):
    return new_database("paycast_action")


@pytest.fixture(scope="module")
def action_server(action_dsn, localstripe):
    proc = ServerProcess(action_dsn, PAYCAST_STRIPE_API_BASE=localstripe.url, PAYCAST_CONNECTOR_TIMEOUT_S="5",
                         PAYCAST_ACTION_DEADLINE_S=str(DEADLINE_S), PAYCAST_RECONCILE_INTERVAL_S="0.3",
                         PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS="true").start()
    try:
        yield proc
    finally:
        stop_all([proc])


def _merchant(server: ServerProcess, localstripe, with_account: bool = True):
    """A merchant's API key and client, with its Stripe account (at localstripe) added."""
    key = server.create_merchant()
    client = server.client(key)
    if with_account:
        r = client.post("/v1/connector_accounts", json={
            "connector": "stripe", "webhook_secret": "whsec_" + secrets.token_urlsafe(24),
            "credentials": {"secret_key": localstripe.secret_key}})
        expect(r, 201)
    return key, client


def _pay_3ds(client, localstripe, **extra) -> dict:
    r = client.post("/v1/payments", json={
        "amount": AMOUNT, "currency": "EUR", "confirm": True, "customer_id": extra.pop("customer_id", None),
        "payment_method": {"type": "card", "token": localstripe.card_payment_method(THREE_D_SECURE)}, **extra})
    expect(r, 201)
    payment = r.json()
    assert payment["status"] == "requires_action", payment
    return payment


def _txn(payment: dict) -> str:
    return payment["attempts"][-1]["connector_txn_id"]


def test_an_abandoned_action_is_canceled_at_the_gateway_then_here(action_server, action_dsn, localstripe):
    _, client = _merchant(action_server, localstripe)
    with closing(client):
        payment = _pay_3ds(client, localstripe)
        assert payment["next_action"]["type"] == "connector_sdk"
        assert payment["cancellation_reason"] is None
        pi = localstripe.payment_intent(_txn(payment))
        assert pi["status"] == "requires_action"
        # Before the deadline nothing happens; after it the reconciler ends it.
        done = wait_for(lambda: (p := client.get(f"/v1/payments/{payment['id']}").json())["status"] == "canceled"
                        and p, timeout=DEADLINE_S + 15)
        assert done["cancellation_reason"] == "abandoned"
        assert done["next_action"] is None
        assert done["attempts"][-1]["status"] == "failed"
        assert localstripe.payment_intent(pi["id"])["status"] == "canceled"
        types = [e["type"] for e in client.get("/v1/events", params={"object_id": payment["id"]}).json()["data"]]
        assert types[:2] == ["payment.canceled", "payment.requires_action"], types  # newest first
    assert run_check(action_dsn).returncode == 0, run_check(action_dsn).stdout


def test_an_action_completed_whose_webhook_was_lost_settles_at_the_deadline(action_server, localstripe):
    _, client = _merchant(action_server, localstripe)
    with closing(client):
        payment = _pay_3ds(client, localstripe)
        localstripe.authenticate(_txn(payment), success=True)  # its webhook goes nowhere of ours
        done = wait_for(lambda: (p := client.get(f"/v1/payments/{payment['id']}").json())["status"] != "requires_action"
                        and p, timeout=DEADLINE_S + 15)
        assert done["status"] == "succeeded", done
        assert done["cancellation_reason"] is None
        assert done["amount_received"] == AMOUNT
        assert localstripe.payment_intent(_txn(payment))["status"] == "succeeded"


def test_raw_card_numbers_never_reach_a_real_connector(action_server, action_dsn, localstripe):
    _, client = _merchant(action_server, localstripe)
    with closing(client):
        before = len(localstripe.payment_intents())
        for connector in ("stripe", "razorpay"):
            for confirm in (True, False):
                r = client.post("/v1/payments", json={
                    "amount": AMOUNT, "currency": "EUR", "connector": connector, "confirm": confirm,
                    "payment_method": {"type": "card", "card": {"number": "4242424242424242"}}})
                expect(r, 400)
                assert r.json()["error"] == {
                    "type": "invalid_request_error", "code": "raw_card_data_not_allowed",
                    "param": "payment_method.card.number", "message": r.json()["error"]["message"]}
                assert "4242424242424242" not in r.text
        assert len(localstripe.payment_intents()) == before
        assert client.get("/v1/payments").json()["data"] == []
        # Unpinned, the same card goes to a simulator: routing never offers it to stripe.
        r = client.post("/v1/payments", json={
            "amount": AMOUNT, "currency": "EUR", "confirm": True,
            "payment_method": {"type": "card", "card": {"number": "4242424242424242"}}})
        expect(r, 201)
        assert r.json()["connector"] == "mockstripe", r.text
        assert len(localstripe.payment_intents()) == before
        stored = db_fetch(action_dsn, "SELECT payment_method FROM payments WHERE id = $1", r.json()["id"])
        assert "4242424242424242" not in json.dumps(stored, default=str)


def test_token_methods_pin_to_stripe_and_are_validated(action_server, localstripe):
    _, client = _merchant(action_server, localstripe)
    with closing(client):
        def create(**body):
            return client.post("/v1/payments", json={"amount": AMOUNT, "currency": "EUR", **body})

        r = create(payment_method={"type": "card", "token": "pm_card_visa"}, confirm=True)
        expect(r, 201)
        paid = r.json()
        assert (paid["connector"], paid["status"]) == ("stripe", "succeeded")
        assert paid["payment_method"]["token"] == "pm_card_visa"
        # What the gateway told of the card is stored and shown: brand and last 4, nothing more.
        assert paid["payment_method"]["card"] == {"brand": "visa", "last4": "4242"}, paid["payment_method"]
        assert paid["next_action"] is None
        assert localstripe.payment_intent(_txn(paid))["status"] == "succeeded"
        bad = [
            ({"payment_method": {"type": "card", "token": "pm_card_visa"}, "connector": "mockstripe"}, "connector"),
            ({"payment_method": {"type": "card", "token": "4242424242424242"}}, "payment_method.token"),
            ({"payment_method": {"type": "upi", "token": "pm_card_visa"}}, "payment_method.token"),
            ({"payment_method": {"type": "card", "token": "pm_card_visa", "card": {"number": "4242424242424242"}}},
             "payment_method.token"),
            ({"payment_method": {"type": "card"}, "connector": "stripe"}, "payment_method.token"),
            ({"payment_method": {"type": "card"}}, "payment_method.card.number"),
            ({"payment_method": {"type": "card", "token": "pm_card_visa"}, "return_url": "https://shop.example/back"},
             "return_url"),  # return_url only with confirm: true
            ({"payment_method": {"type": "card", "token": "pm_card_visa"}, "confirm": True,
              "return_url": "javascript:alert(1)"}, "return_url"),
        ]
        for body, param in bad:
            r = create(**body)
            expect(r, 400, note=body)
            assert r.json()["error"]["param"] == param, (body, r.json())
        r = client.post(f"/v1/payments/{paid['id']}/confirm", json={"return_url": "ftp://x"})
        expect(r, 400)
        assert r.json()["error"]["param"] == "return_url", r.text


def test_a_real_connector_without_an_account_is_refused_at_create(action_server, localstripe):
    _, client = _merchant(action_server, localstripe, with_account=False)
    with closing(client):
        r = client.post("/v1/payments", json={"amount": AMOUNT, "currency": "EUR", "confirm": True,
                                               "payment_method": {"type": "card", "token": "pm_card_visa"}})
        expect(r, 400)
        assert (r.json()["error"]["param"], r.json()["error"]["code"]) == ("connector", "connector_account_missing")


async def test_requires_action_reaches_outgoing_webhooks_and_the_customers_device(action_server, localstripe):
    key, client = _merchant(action_server, localstripe)
    customer = "cus_" + secrets.token_hex(4)
    with closing(client), Receiver() as receiver:
        r = client.post("/v1/webhook_endpoints", json={"url": receiver.url, "enabled_events": ["payment.requires_action"]})
        expect(r, 201)
        payment = _pay_3ds(client, localstripe, customer_id=customer)
        sent = await trio.to_thread.run_sync(lambda: wait_for(lambda: receiver.received, timeout=15))
        event = json.loads(sent[0].body)
        assert event["type"] == "payment.requires_action"
        assert event["data"]["object"]["id"] == payment["id"]
        assert event["data"]["object"]["next_action"] == payment["next_action"]
        async with http(action_server, key) as api:
            tok = await token(api, customer)
        async with connect(action_server, tok, after_seq=0) as ws:
            await welcome(ws)
            got = []
            with trio.fail_after(15):
                while "payment.requires_action" not in got:
                    f = await frame(ws)
                    if f["type"] == "event":
                        got.append(f["event"]["type"])
                        if f["event"]["type"] == "payment.requires_action":
                            assert f["event"]["data"]["object"]["next_action"] == payment["next_action"]
        assert got[0] == "payment.created", got
