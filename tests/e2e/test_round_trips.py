"""Round trips per unit of work on the payment path (docs/architecture.md decision 7).

The server counts every statement its units of work send
(``paycast_db_round_trips_total{unit=...}`` on /metrics); these tests drive one
operation at a time through the real HTTP edge and read the counters around it.
Each unit of work the operation runs must take at most two round trips.
"""

from __future__ import annotations

import json
import re
import time

from tests.support import UPI, db_fetch, expect, payment_body, sign_stripe, wait_for

_SAMPLE = re.compile(r'^(paycast_db_round_trips_total|paycast_db_units_total)\{unit="([^"]+)"\} ([0-9.e+]+)$')
MAX_ROUND_TRIPS = 2


def _counters(client) -> dict[str, tuple[float, float]]:
    """``{unit: (round trips, units)}`` from /metrics."""
    out: dict[str, list[float]] = {}
    for line in client.get("/metrics").text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            slot = 0 if m.group(1) == "paycast_db_round_trips_total" else 1
            out.setdefault(m.group(2), [0.0, 0.0])[slot] = float(m.group(3))
    return {k: (v[0], v[1]) for k, v in out.items()}


class Cost:
    """Round trips per unit of work, for the units named, across a block."""

    def __init__(self, client, *units: str) -> None:
        self.client, self.units = client, units

    def __enter__(self) -> "Cost":
        self.before = _counters(self.client)
        return self

    def __exit__(self, *exc) -> None:
        after = _counters(self.client)
        self.per_unit: dict[str, float] = {}
        for unit in self.units:
            trips = after.get(unit, (0, 0))[0] - self.before.get(unit, (0, 0))[0]
            runs = after.get(unit, (0, 0))[1] - self.before.get(unit, (0, 0))[1]
            if runs:
                self.per_unit[unit] = trips / runs

    def check(self) -> None:
        assert set(self.per_unit) == set(self.units), f"units that did not run: {set(self.units) - set(self.per_unit)}"
        too_many = {u: n for u, n in self.per_unit.items() if n > MAX_ROUND_TRIPS}
        assert not too_many, f"round trips per unit of work: {self.per_unit}"


def test_create_confirm_capture_cancel_each_take_at_most_two_round_trips(client):
    with Cost(client, "payments.create") as cost:
        pay = client.post("/v1/payments", json=payment_body(1500, capture_method="manual")).json()
    cost.check()
    with Cost(client, "payments.begin_attempt", "payments.settle_begun") as cost:
        pay = client.post(f"/v1/payments/{pay['id']}/confirm").json()
    assert pay["status"] == "requires_capture"
    cost.check()
    with Cost(client, "payments.load", "payments.capture") as cost:
        r = client.post(f"/v1/payments/{pay['id']}/capture", json={"amount": 1000})
    expect(r, 200)
    assert r.json()["status"] == "succeeded", r.text
    cost.check()
    other = client.post("/v1/payments", json=payment_body(700)).json()
    with Cost(client, "payments.load", "payments.cancel") as cost:
        assert client.post(f"/v1/payments/{other['id']}/cancel").json()["status"] == "canceled"
    cost.check()


def test_confirm_true_takes_the_intent_first_path_in_few_round_trips(client):
    with Cost(client, "payments.create_and_begin", "payments.settle_begun") as cost:
        pay = client.post("/v1/payments", json=payment_body(900, confirm=True)).json()
    assert pay["status"] == "succeeded"
    assert pay["attempts"][0]["status"] == "succeeded"
    cost.check()


def test_refund_takes_at_most_two_round_trips_per_unit(client):
    pay = client.post("/v1/payments", json=payment_body(2000, confirm=True)).json()
    with Cost(client, "refunds.begin", "refunds.record_submission") as cost:
        r = client.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 500})
    expect(r, 201)
    cost.check()
    # The simulator answers the refund by webhook: let it land here, not in the next test's counters.
    wait_for(lambda: client.get(f"/v1/refunds/{r.json()['id']}").json()["status"] != "pending")


def test_webhook_ingest_and_apply_take_one_round_trip_each(client, server):
    """The insert claims the row and reads what the apply needs; the apply is then its one statement."""
    pay = client.post("/v1/payments", json=payment_body(1200, method=UPI("pending@upi"), confirm=True)).json()
    assert pay["status"] == "processing"
    body = json.dumps({"id": f"evt_rt_{pay['id']}", "type": "payment_intent.succeeded", "created": int(time.time()),
                       "data": {"object": {"id": pay["attempts"][0]["connector_txn_id"], "amount": pay["amount"],
                                           "currency": "inr", "status": "succeeded",
                                           "metadata": {"payment_id": pay["id"]}}}}).encode()
    with Cost(client, "inbox.insert_many", "inbox.apply") as cost:
        with server.client() as anon:
            expect(anon.post("/webhooks/mockstripe", content=body, headers=sign_stripe(body)), 200)
        wait_for(lambda: client.get(f"/v1/payments/{pay['id']}").json()["status"] == "succeeded")
    cost.check()
    assert cost.per_unit == {"inbox.insert_many": 1, "inbox.apply": 1}, cost.per_unit


def test_a_customers_realtime_messages_ride_the_statement_that_appends_the_events(client, db_dsn):
    """With ``customer_id`` the realtime log is written too, in the same one statement."""
    with Cost(client, "payments.create_and_begin", "payments.settle_begun") as cost:
        pay = client.post("/v1/payments", json=payment_body(950, confirm=True, customer_id="cus_rt_trips")).json()
    assert pay["status"] == "succeeded", pay
    cost.check()
    assert cost.per_unit == {"payments.create_and_begin": 1, "payments.settle_begun": 1}, cost.per_unit
    stored = db_fetch(db_dsn, "SELECT seq, topic, payload FROM realtime_messages WHERE client_id = 'cus_rt_trips'"
                              " ORDER BY seq")
    events = client.get("/v1/events", params={"object_id": pay["id"], "after_seq": 0}).json()["data"]
    assert [m["seq"] for m in stored] == list(range(1, len(events) + 1))
    assert [json.loads(m["payload"]) for m in stored] == events  # the events' API forms, merchant seqs included
    assert {m["topic"] for m in stored} == {f"payment:{pay['id']}"}
