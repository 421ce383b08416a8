"""Outgoing merchant webhooks end to end, against real local HTTP endpoints:
signatures checked with the third-party ``standardwebhooks`` package, retries
on a fast schedule (500, 500, 200 → delivered on the third attempt), 410
disabling the endpoint, manual retry, a restart mid-retry, a slow endpoint
that never delays payments, and two processes sharing the deliveries."""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import standardwebhooks

from tests.receiver import Receiver
from tests.support import ServerProcess, db_fetch, expect, payment_body, run_check, stop_all, wait_for

# Receivers listen on 127.0.0.1: every server here needs the development switch.
LOCAL = {"PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS": "true"}
FAST = {"PAYCAST_WEBHOOK_RETRY_SCHEDULE": "0,1,1", **LOCAL}


def _endpoint(client, url, events=("*",)):
    r = client.post("/v1/webhook_endpoints", json={"url": url, "enabled_events": list(events)})
    expect(r, 201)
    return r.json()


def _deliveries(client, endpoint_id, **params):
    r = client.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries", params={"limit": 100, **params})
    expect(r, 200)
    return r.json()["data"]


def _verify(secret, received):
    """The event as ``standardwebhooks`` verifies it (raises if the signature is wrong)."""
    return standardwebhooks.Webhook(secret).verify(received.body, received.headers)


@pytest.fixture(scope="module")
def fast_server(new_database):
    """A server whose outgoing webhooks retry after 1 s (schedule 0,1,1: three attempts)."""
    proc = ServerProcess(new_database("paycast_whfast"), **FAST).start()
    try:
        yield proc
    finally:
        proc.stop()


def test_endpoint_create_read_list_delete_and_validation(client):
    created = _endpoint(client, "http://127.0.0.1:9/hooks", ["payment.succeeded", "refund.succeeded"])
    assert created["object"] == "webhook_endpoint"
    assert created["id"].startswith("we_")
    assert created["status"] == "enabled"
    assert created["enabled_events"] == ["payment.succeeded", "refund.succeeded"]
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret[6:], validate=True)) <= 64
    got = client.get(f"/v1/webhook_endpoints/{created['id']}").json()
    assert "secret" not in got
    assert got["url"] == "http://127.0.0.1:9/hooks"
    assert [e["id"] for e in client.get("/v1/webhook_endpoints").json()["data"]] == [created["id"]]
    deleted = client.delete(f"/v1/webhook_endpoints/{created['id']}")
    expect(deleted, 200)
    assert deleted.json() == {"id": created["id"], "object": "webhook_endpoint",
                                                              "deleted": True}
    expect(client.get(f"/v1/webhook_endpoints/{created['id']}"), 404)
    expect(client.delete(f"/v1/webhook_endpoints/{created['id']}"), 404)
    assert client.get("/v1/webhook_endpoints").json()["data"] == []
    for body, param in [({"url": "ftp://x/y", "enabled_events": ["*"]}, "url"),
                        ({"url": "not a url", "enabled_events": ["*"]}, "url"),
                        ({"url": "http://user:pw@127.0.0.1/", "enabled_events": ["*"]}, "url"),
                        ({"url": "http://127.0.0.1/", "enabled_events": []}, "enabled_events"),
                        ({"url": "http://127.0.0.1/", "enabled_events": ["payment.nope"]}, "enabled_events"),
                        ({"url": "http://127.0.0.1/"}, "enabled_events"),
                        ({"enabled_events": ["*"]}, "url")]:
        r = client.post("/v1/webhook_endpoints", json=body)
        expect(r, 400, note=body)
        assert r.json()["error"]["param"] == param, (body, r.text)


def test_every_event_delivered_and_verified_with_standardwebhooks(client):
    with Receiver() as receiver:
        endpoint = _endpoint(client, receiver.url)
        pay = client.post("/v1/payments", json=payment_body(1234, customer_id="cus_wh", confirm=True)).json()
        refund = client.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 234}).json()
        events = wait_for(lambda: (ev := client.get("/v1/events").json()["data"]) and len(ev) >= 3 and ev)
        expected = {e["id"] for e in events}
        wait_for(lambda: expected <= set(receiver.ids()))
    by_id = {}
    for received in receiver.received:
        event = _verify(endpoint["secret"], received)
        assert received.headers["webhook-id"] == event["id"]
        assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 60
        assert received.headers["webhook-signature"].startswith("v1,")
        assert received.headers["content-type"] == "application/json"
        by_id[event["id"]] = event
    for event in events:
        assert by_id[event["id"]] == client.get(f"/v1/events/{event['id']}").json()
    types = {e["type"] for e in by_id.values()}
    assert {"payment.created", "payment.succeeded", "refund.succeeded"} <= types
    assert any(e["data"]["object"]["id"] == refund["id"] for e in by_id.values())
    # A tampered body or a wrong secret does not verify.
    sample = receiver.received[0]
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(endpoint["secret"]).verify(sample.body + b" ", sample.headers)
    other = base64.b64encode(b"x" * 32).decode()
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook("whsec_" + other).verify(sample.body, sample.headers)
    deliveries = wait_for(lambda: (d := _deliveries(client, endpoint["id"])) and all(
        x["status"] == "succeeded" for x in d) and d)
    for d in deliveries:
        assert d["object"] == "webhook_delivery"
        assert d["id"].startswith("wd_")
        assert d["endpoint_id"] == endpoint["id"]
        assert d["attempt_count"] == 1
        assert len(d["attempts"]) == 1
        assert d["attempts"][0]["status_code"] == 200
        assert d["attempts"][0]["latency_ms"] >= 0
        assert d["delivered_at"]
        assert d["next_attempt_at"] is None


def test_enabled_events_filter_what_is_sent(client):
    with Receiver() as receiver:
        endpoint = _endpoint(client, receiver.url, ["refund.succeeded", "refund.failed"])
        pay = client.post("/v1/payments", json=payment_body(500, confirm=True)).json()
        refund = client.post("/v1/refunds", json={"payment_id": pay["id"]}).json()
        wait_for(lambda: receiver.received)
        # Deliveries are written with their events (same transaction): by the time the
        # refund's was sent, the payment's events had none. No sleep needed to see it.
        deliveries = _deliveries(client, endpoint["id"])
        assert [d["event_type"] for d in deliveries] == ["refund.succeeded"], deliveries
    events = [json.loads(r.body) for r in receiver.received]
    assert [(e["type"], e["data"]["object"]["id"]) for e in events] == [("refund.succeeded", refund["id"])]


def test_500_500_200_is_delivered_on_the_third_attempt(fast_server):
    api_key = fast_server.create_merchant()
    with fast_server.client(api_key) as client, Receiver(script=[500, 500]) as receiver:
        endpoint = _endpoint(client, receiver.url, ["payment.succeeded"])
        pay = client.post("/v1/payments", json=payment_body(confirm=True)).json()
        delivery = wait_for(lambda: (d := _deliveries(client, endpoint["id"])) and d[0]["status"] == "succeeded"
                            and d[0], timeout=20)
        assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
        assert [a["attempt"] for a in delivery["attempts"]] == [1, 2, 3]
        assert delivery["attempt_count"] == 3
        assert all(a["latency_ms"] >= 0 for a in delivery["attempts"])
        assert len(receiver.received) == 3
        # Same webhook-id every time, each attempt signed afresh and valid.
        assert {r.headers["webhook-id"] for r in receiver.received} == {delivery["event_id"]}
        for received in receiver.received:
            assert _verify(endpoint["secret"], received)["data"]["object"]["id"] == pay["id"]
        gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:])]
        assert all(g >= 0.9 for g in gaps), gaps  # the schedule's 1 s between attempts


def test_exhausted_retries_fail_then_manual_retry_delivers(fast_server):
    api_key = fast_server.create_merchant()
    with fast_server.client(api_key) as client, Receiver(script=[503, 500, 502]) as receiver:
        endpoint = _endpoint(client, receiver.url, ["payment.created"])
        client.post("/v1/payments", json=payment_body())
        failed = wait_for(lambda: (d := _deliveries(client, endpoint["id"])) and d[0]["status"] == "failed"
                          and d[0], timeout=20)
        assert [a["status_code"] for a in failed["attempts"]] == [503, 500, 502]
        assert client.get(f"/v1/webhook_endpoints/{endpoint['id']}").json()["status"] == "enabled"
        r = client.post(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries/{failed['id']}/retry")
        expect(r, 200)
        assert r.json()["status"] == "pending"
        done = wait_for(lambda: (d := _deliveries(client, endpoint["id"])) and d[0]["status"] == "succeeded"
                        and d[0])
        assert [a["status_code"] for a in done["attempts"]] == [503, 500, 502, 200]
        expect(client.post(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries/wd_nope/retry"), 404)
        assert _deliveries(client, endpoint["id"], status="succeeded")[0]["id"] == done["id"]
        assert _deliveries(client, endpoint["id"], status="failed") == []


def test_410_disables_the_endpoint(client):
    with Receiver(script=[410]) as receiver:
        endpoint = _endpoint(client, receiver.url, ["payment.created"])
        client.post("/v1/payments", json=payment_body())
        wait_for(lambda: client.get(f"/v1/webhook_endpoints/{endpoint['id']}").json()["status"] == "disabled")
        got = client.get(f"/v1/webhook_endpoints/{endpoint['id']}").json()
        assert got["disabled_reason"]
        first = _deliveries(client, endpoint["id"])
        assert len(first) == 1
        assert first[0]["status"] == "failed"
        assert [a["status_code"] for a in first[0]["attempts"]] == [410]
        # Nothing more is sent to it; its deliveries cannot be retried.
        client.post("/v1/payments", json=payment_body())
        # No delivery row is created for a disabled endpoint (written with the event),
        # so nothing can ever be sent for it: checked at once, no sleep.
        assert len(_deliveries(client, endpoint["id"])) == 1
        assert len(receiver.received) == 1
        r = client.post(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries/{first[0]['id']}/retry")
        expect(r, 409)
        assert r.json()["error"]["code"] == "endpoint_disabled"


def test_restart_mid_retry_still_delivers(new_database, start_server):
    """The first attempt fails, the process dies (kill -9) before the retry is due,
    and a new process on the same database makes the retry."""
    dsn = new_database("paycast_whrestart")
    schedule = {"PAYCAST_WEBHOOK_RETRY_SCHEDULE": "0,3,3", **LOCAL}
    first = start_server(dsn, **schedule)
    with Receiver(script=[500]) as receiver:
        try:
            api_key = first.create_merchant()
            with first.client(api_key) as c:
                endpoint = _endpoint(c, receiver.url, ["payment.succeeded"])
                c.post("/v1/payments", json=payment_body(confirm=True))
            wait_for(lambda: len(receiver.received) == 1)
            wait_for(lambda: db_fetch(dsn, "SELECT attempt_count FROM webhook_deliveries")[0]["attempt_count"] == 1)
            first.kill9()
        finally:
            first.stop()
        assert len(receiver.received) == 1
        second = start_server(dsn, **schedule)
        try:
            with second.client(api_key) as c:
                done = wait_for(lambda: (d := _deliveries(c, endpoint["id"])) and d[0]["status"] == "succeeded"
                                and d[0], timeout=20)
            assert [a["status_code"] for a in done["attempts"]] == [500, 200]
            assert len(receiver.received) == 2
            assert receiver.received[0].headers["webhook-id"] == receiver.received[1].headers["webhook-id"]
            check = run_check(dsn)
            assert check.returncode == 0, check.stdout
        finally:
            second.stop()


def test_slow_endpoint_never_delays_payments_and_is_bounded(client):
    """Payments complete while every delivery to the endpoint is held open: causal,
    no wall-clock threshold (a shared 2-core machine makes those flaky)."""
    gate = threading.Event()
    with Receiver(gate=gate) as slow:
        endpoint = _endpoint(client, slow.url)
        for i in range(12):
            r = client.post("/v1/payments", json=payment_body(100 + i, confirm=True))
            expect(r, 201)
            assert r.json()["status"] == "succeeded"
        # The deliveries really were stuck at the endpoint while the payments went through.
        wait_for(lambda: slow.in_flight >= 1)
        assert not _deliveries(client, endpoint["id"], status="succeeded")
        gate.set()
        wait_for(lambda: len(_deliveries(client, endpoint["id"], status="succeeded")) == 24, timeout=30)
        assert 1 <= slow.max_in_flight <= 4  # bounded concurrency per endpoint


def test_two_processes_share_deliveries_without_duplicates(new_database, start_server):
    dsn = new_database("paycast_whtwo")
    a, b = start_server(dsn, **LOCAL), start_server(dsn, **LOCAL)
    try:
        api_key = a.create_merchant()
        with Receiver() as receiver:
            with a.client(api_key) as c:
                endpoint = _endpoint(c, receiver.url, ["payment.succeeded"])

            def pay(i):
                with (a if i % 2 else b).client(api_key) as c:
                    return c.post("/v1/payments", json=payment_body(100 + i, confirm=True)).json()["id"]

            with ThreadPoolExecutor(8) as pool:
                paid = list(pool.map(pay, range(40)))
            with b.client(api_key) as c:
                wait_for(lambda: len(_deliveries(c, endpoint["id"], status="succeeded")) == 40, timeout=30)
            ids = receiver.ids()
            assert len(ids) == 40
            assert len(set(ids)) == 40
            sent_for = {json.loads(r.body)["data"]["object"]["id"] for r in receiver.received}
            assert sent_for == set(paid)
        check = run_check(dsn)
        assert check.returncode == 0, check.stdout
    finally:
        stop_all([a, b])


def test_private_urls_refused_by_default(new_database, start_server):
    server = start_server(new_database("paycast_whprivate"))
    try:
        api_key = server.create_merchant()
        with server.client(api_key) as c:
            for url in ("http://127.0.0.1:8080/hooks", "http://localhost/hooks", "http://10.1.2.3/hooks",
                        "http://192.168.0.10/", "http://172.16.5.4/", "http://169.254.169.254/latest",
                        "http://[::1]/hooks", "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/",
                        "http://foo.localhost/"):
                r = c.post("/v1/webhook_endpoints", json={"url": url, "enabled_events": ["*"]})
                expect(r, 400, note=url)
                assert r.json()["error"]["param"] == "url"
                assert r.json()["error"]["code"] == "url_not_allowed"
            # A public address is accepted (and deleted at once: this test sends nothing anywhere).
            ok = c.post("/v1/webhook_endpoints", json={"url": "https://93.184.216.34/hooks",
                                                       "enabled_events": ["*"]})
            expect(ok, 201)
            expect(c.delete(f"/v1/webhook_endpoints/{ok.json()['id']}"), 200)
    finally:
        server.stop()


def test_plain_http_refused_unless_private_urls_allowed(new_database, start_server):
    server = start_server(new_database("paycast_whhttps"))
    try:
        with server.client(server.create_merchant()) as c:
            r = c.post("/v1/webhook_endpoints", json={"url": "http://93.184.216.34/hooks", "enabled_events": ["*"]})
            expect(r, 400)
            assert r.json()["error"]["param"] == "url", r.text
            assert r.json()["error"]["type"] == "invalid_request_error"
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["127.1", "2130706433", "localhost"])
def test_names_resolving_to_loopback_are_refused_at_send_time(new_database, start_server, host):
    """Registered while private URLs were allowed (or before its DNS changed), a URL
    whose host resolves to 127.0.0.1 is not contacted by a server that refuses them.
    ``127.1`` and ``2130706433`` are names to the URL parser that the system
    resolver turns into 127.0.0.1 without any hosts file or DNS server."""
    dsn = new_database("paycast_whrebind")
    with Receiver() as receiver:
        url = receiver.url.replace("127.0.0.1", host)
        dev = start_server(dsn, **LOCAL)
        try:
            api_key = dev.create_merchant()
            with dev.client(api_key) as c:
                endpoint = c.post("/v1/webhook_endpoints", json={"url": url, "enabled_events": ["payment.succeeded"]})
                expect(endpoint, 201)
        finally:
            dev.stop()
        strict = start_server(dsn, PAYCAST_WEBHOOK_RETRY_SCHEDULE="0")
        try:
            with strict.client(api_key) as c:
                # Registration refuses it too …
                again = c.post("/v1/webhook_endpoints", json={"url": url, "enabled_events": ["*"]})
                expect(again, 400)
                assert again.json()["error"]["param"] == "url"
                # … and so does the send, after resolving the name.
                expect(c.post("/v1/payments", json=payment_body(confirm=True)), 201)
                done = wait_for(lambda: (d := _deliveries(c, endpoint.json()["id"])) and d[0]["status"] == "failed"
                                and d[0], timeout=20)
                assert all("private" in (a["error"] or "") for a in done["attempts"]), done
            assert receiver.received == []
        finally:
            strict.stop()
