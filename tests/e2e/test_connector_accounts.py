"""``/v1/connector_accounts`` end to end: a real server, the real PostgreSQL, and
the gateway stand-ins the credentials are tried against: the fake Razorpay
server (tests/fakes/fake_razorpay.py) and localstripe (tests/stand_ins/localstripe.py). Exact shapes and codes of docs/api.md v1.2, masks,
one active account per connector, rotation, disable, tenant isolation, routing
and ``/v1/connectors``, and the per-account webhook path.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest

from tests.fakes.fake_razorpay import FakeRazorpay, sign
from tests.support import ServerProcess, db_fetch, expect, stop_all, wait_for

ORDERS = r"/v1/orders"
ACCOUNT_KEYS = {"id", "object", "connector", "label", "status", "livemode", "credentials", "webhook_path",
                "created_at", "updated_at"}


@pytest.fixture(scope="module")
def fake():
    with FakeRazorpay(hang_s=3) as server:
        yield server


@pytest.fixture(scope="module")
def dsn(new_database):
    return new_database("paycast_mca")


@pytest.fixture(scope="module")
def server(dsn, fake, localstripe):
    proc = ServerProcess(dsn, PAYCAST_RAZORPAY_API_BASE=fake.url, PAYCAST_STRIPE_API_BASE=localstripe.url,
                         PAYCAST_CONNECTOR_TIMEOUT_S="1").start()
    try:
        yield proc
    finally:
        stop_all([proc])


@pytest.fixture
def client(server):
    with server.client(server.create_merchant()) as c:
        yield c


def _body(account, webhook_secret: str | None = None, **extra) -> dict:
    return {"connector": "razorpay", "credentials": {"key_id": account.key_id, "key_secret": account.key_secret},
            "webhook_secret": webhook_secret or secrets.token_urlsafe(24), **extra}


def _mask(key_id: str) -> str:
    return "rzp_test_…" + key_id[-4:]


def test_create_tries_the_credentials_then_shows_only_the_mask(client, fake, dsn):
    account = fake.add_account()
    webhook_secret = secrets.token_urlsafe(24)
    before = fake.count("GET", ORDERS)
    r = client.post("/v1/connector_accounts", json=_body(account, webhook_secret, label="India"))
    expect(r, 201)
    created = r.json()
    assert set(created) == ACCOUNT_KEYS
    assert created["id"].startswith("mca_")
    assert created["object"] == "connector_account"
    assert (created["connector"], created["label"], created["status"], created["livemode"]) == \
        ("razorpay", "India", "active", False)
    assert created["credentials"] == {"key_id": _mask(account.key_id)}
    assert created["webhook_path"] == f"/webhooks/razorpay/{created['id']}"
    assert fake.count("GET", ORDERS) == before + 1  # tried at the gateway before storing
    for read in (client.get(f"/v1/connector_accounts/{created['id']}").json(),
                 client.get("/v1/connector_accounts").json()["data"][0]):
        assert read == created
    text = json.dumps(created) + r.text
    assert account.key_secret not in text
    assert webhook_secret not in text
    row = db_fetch(dsn, "SELECT * FROM connector_accounts WHERE id = $1", created["id"])[0]
    assert row["credentials_sealed"].startswith("pcs1.")
    assert row["webhook_secret_sealed"].startswith("pcs1.")
    stored = json.dumps(row, default=str)
    assert account.key_secret not in stored
    assert webhook_secret not in stored
    assert account.key_id not in stored


def test_stripe_account_against_localstripe(client):
    """localstripe accepts any ``sk_…`` key and answers 401 to ``rk_…`` keys (its source)."""
    secret_key = "sk_test_" + secrets.token_hex(12)
    r = client.post("/v1/connector_accounts", json={"connector": "stripe", "credentials": {"secret_key": secret_key},
                                                    "webhook_secret": "whsec_" + secrets.token_hex(16)})
    expect(r, 201)
    created = r.json()
    assert created["credentials"] == {"secret_key": "sk_test_…" + secret_key[-4:]}
    assert created["livemode"] is False
    assert created["webhook_path"] == f"/webhooks/stripe/{created['id']}"
    assert secret_key not in r.text
    refused_key = "rk_test_" + secrets.token_hex(12)
    r = client.post(f"/v1/connector_accounts/{created['id']}", json={"credentials": {"secret_key": refused_key}})
    expect(r, 400)
    assert r.json()["error"]["code"] == "connector_credentials_invalid", r.text
    assert refused_key not in r.text
    assert client.get(f"/v1/connector_accounts/{created['id']}").json() == created


def test_refused_credentials_are_400_and_nothing_is_stored(client, fake):
    account = fake.add_account()
    body = _body(account)
    body["credentials"]["key_secret"] = "wrong" + account.key_secret
    r = client.post("/v1/connector_accounts", json=body)
    expect(r, 400)
    error = r.json()["error"]
    assert (error["type"], error["code"], error["param"]) == \
        ("invalid_request_error", "connector_credentials_invalid", "credentials")
    assert body["credentials"]["key_secret"] not in r.text
    assert client.get("/v1/connector_accounts").json()["data"] == []


def test_gateway_unreachable_is_503_connector_unavailable(client, fake):
    fake.fault("GET", ORDERS, "server_error")
    r = client.post("/v1/connector_accounts", json=_body(fake.add_account()))
    expect(r, 503)
    assert (r.json()["error"]["type"], r.json()["error"]["code"]) == ("api_error", "connector_unavailable")
    assert client.get("/v1/connector_accounts").json()["data"] == []


def test_one_active_account_per_connector(client, fake):
    expect(client.post("/v1/connector_accounts", json=_body(fake.add_account())), 201)
    before = fake.count("GET", ORDERS)
    r = client.post("/v1/connector_accounts", json=_body(fake.add_account()))
    expect(r, 409)
    assert (r.json()["error"]["type"], r.json()["error"]["code"]) == ("state_error", "connector_account_exists")
    assert fake.count("GET", ORDERS) == before  # refused before the gateway is asked


@pytest.mark.parametrize(("body", "param"), [
    ({}, "connector"),
    ({"connector": "mockstripe"}, "connector"),
    ({"connector": "razorpay"}, "credentials"),
    ({"connector": "razorpay", "credentials": {"key_id": "rzp_test_x"}, "webhook_secret": "s"},
     "credentials.key_secret"),
    ({"connector": "razorpay", "credentials": {"key_id": "sk_test_x", "key_secret": "hunter2hunter2"},
      "webhook_secret": "s"}, "credentials.key_id"),
    ({"connector": "razorpay", "credentials": {"key_id": "rzp_test_x", "key_secret": "hunter2hunter2",
                                               "extra": 1}, "webhook_secret": "s"}, "credentials.extra"),
    ({"connector": "razorpay", "credentials": {"key_id": "rzp_test_x", "key_secret": "hunter2hunter2"}},
     "webhook_secret"),
    ({"connector": "stripe", "credentials": {"secret_key": "pk_test_hunter2hunter2"}, "webhook_secret": "s"},
     "credentials.secret_key"),
    ({"connector": "stripe", "credentials": {"secret_key": "sk_test_x"}, "webhook_secret": "s", "livemode": True},
     "livemode"),
    ({"connector": "stripe", "credentials": "sk_test_hunter2hunter2", "webhook_secret": "s"}, "credentials"),
])
def test_bad_bodies_are_400_naming_the_field_without_echoing_secrets(client, body, param):
    r = client.post("/v1/connector_accounts", json=body)
    expect(r, 400)
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["param"] == param
    assert "hunter2" not in r.text


def test_rotation_tries_the_new_credentials_first(client, fake, dsn):
    first, second = fake.add_account(), fake.add_account()
    created = client.post("/v1/connector_accounts", json=_body(first)).json()
    path = f"/v1/connector_accounts/{created['id']}"
    wrong = {"key_id": second.key_id, "key_secret": "nope" + second.key_secret}
    r = client.post(path, json={"credentials": wrong})
    expect(r, 400)
    assert r.json()["error"]["code"] == "connector_credentials_invalid", r.text
    assert client.get(path).json() == created  # unchanged
    before = db_fetch(dsn, "SELECT version FROM connector_accounts WHERE id = $1", created["id"])[0]["version"]
    r = client.post(path, json={"credentials": {"key_id": second.key_id, "key_secret": second.key_secret},
                                "label": "rotated"})
    expect(r, 200)
    rotated = r.json()
    assert rotated["credentials"] == {"key_id": _mask(second.key_id)}
    assert rotated["label"] == "rotated"
    assert rotated["id"] == created["id"]
    assert rotated["updated_at"] >= created["updated_at"]
    after = db_fetch(dsn, "SELECT version FROM connector_accounts WHERE id = $1", created["id"])[0]["version"]
    assert after == before + 1
    r = client.post(path, json={"webhook_secret": "   "})
    expect(r, 400)
    assert r.json()["error"]["param"] == "webhook_secret"
    r = client.post(path, json={"secret_key": "x"})
    expect(r, 400)
    assert r.json()["error"]["code"] == "parameter_unknown"


def test_delete_disables_and_frees_the_connector(client, fake):
    created = client.post("/v1/connector_accounts", json=_body(fake.add_account())).json()
    r = client.delete(f"/v1/connector_accounts/{created['id']}")
    expect(r, 200)
    assert r.json()["status"] == "disabled", r.text
    assert client.delete(f"/v1/connector_accounts/{created['id']}").json()["status"] == "disabled"
    assert client.get(f"/v1/connector_accounts/{created['id']}").json()["status"] == "disabled"
    expect(client.post("/v1/connector_accounts", json=_body(fake.add_account())), 201)


def test_routing_names_a_real_connector_only_with_an_active_account(client, fake):
    routing = {"strategy": "priority", "connectors": ["razorpay", "mockrazorpay"]}
    r = client.put("/v1/routing", json=routing)
    expect(r, 400)
    assert r.json()["error"]["param"] == "connectors", r.text
    names = [c["name"] for c in client.get("/v1/connectors").json()]
    assert "razorpay" not in names
    assert "stripe" not in names
    created = client.post("/v1/connector_accounts", json=_body(fake.add_account())).json()
    expect(client.put("/v1/routing", json=routing), 200)
    listed = {c["name"]: c for c in client.get("/v1/connectors").json()}
    assert listed["razorpay"]["account_id"] == created["id"]
    assert set(listed["razorpay"]) >= {"name", "state", "success_rate", "latency_ms_p50", "attempts"}
    client.delete(f"/v1/connector_accounts/{created['id']}")
    r = client.put("/v1/routing", json={"strategy": "priority", "connectors": ["mockrazorpay"],
                                        "rules": [{"payment_method_type": "upi", "connectors": ["razorpay"]}]})
    expect(r, 400)
    assert r.json()["error"]["param"] == "rules.0.connectors", r.text


def test_other_merchants_accounts_are_404(server, fake):
    with server.client(server.create_merchant("a")) as a, server.client(server.create_merchant("b")) as b:
        created = a.post("/v1/connector_accounts", json=_body(fake.add_account())).json()
        path = f"/v1/connector_accounts/{created['id']}"
        for r in (b.get(path), b.post(path, json={"label": "mine"}), b.delete(path)):
            expect(r, 404)
            assert r.json()["error"]["type"] == "not_found", r.text
        assert b.get("/v1/connector_accounts").json()["data"] == []
        assert "razorpay" not in [c["name"] for c in b.get("/v1/connectors").json()]
        expect(b.put("/v1/routing", json={"strategy": "priority", "connectors": ["razorpay"]}), 400)
        assert a.get(path).json() == created  # untouched by b's attempts


def test_account_webhook_path_verifies_with_the_accounts_secret(server, client, fake, dsn):
    secret = secrets.token_urlsafe(24)
    created = client.post("/v1/connector_accounts", json=_body(fake.add_account(), secret)).json()
    event_id = "evt_" + secrets.token_hex(8)
    raw = json.dumps({"entity": "event", "account_id": "acc_x", "event": "payment.captured",
                      "contains": ["payment"], "created_at": int(time.time()),
                      "payload": {"payment": {"entity": {
                          "id": "pay_" + secrets.token_hex(7), "entity": "payment", "amount": 1000,
                          "currency": "INR", "status": "captured", "order_id": "order_" + secrets.token_hex(7),
                          "notes": {}}}}}).encode()
    headers = {"Content-Type": "application/json", "X-Razorpay-Event-Id": event_id}
    with server.client() as anonymous:
        url = server.url + created["webhook_path"]
        r = anonymous.post(url, content=raw, headers=headers | {"X-Razorpay-Signature": sign("other", raw)})
        expect(r, 400)
        for wrong in (f"/webhooks/stripe/{created['id']}", "/webhooks/razorpay/mca_nope", "/webhooks/nope/x"):
            r = anonymous.post(server.url + wrong, content=raw,
                               headers=headers | {"X-Razorpay-Signature": sign(secret, raw)})
            expect(r, 404, note=wrong)
        good = headers | {"X-Razorpay-Signature": sign(secret, raw)}
        r = anonymous.post(url, content=raw, headers=good)
        expect(r, 200)
        assert r.json() == {"received": True, "duplicate": False}, r.text
        assert anonymous.post(url, content=raw, headers=good).json()["duplicate"] is True
    rows = db_fetch(dsn, "SELECT * FROM webhook_inbox WHERE event_id = $1", event_id)
    assert len(rows) == 1
    assert rows[0]["connector"] == "razorpay"
    assert rows[0]["account_id"] == created["id"]
    # A disabled account's webhooks are still received (its in-flight payments settle).
    client.delete(f"/v1/connector_accounts/{created['id']}")
    raw2 = raw.replace(b"payment.captured", b"payment.authorized")
    with server.client() as anonymous:
        r = anonymous.post(server.url + created["webhook_path"], content=raw2,
                           headers={"Content-Type": "application/json", "X-Razorpay-Event-Id": event_id + "b",
                                    "X-Razorpay-Signature": sign(secret, raw2)})
    expect(r, 200)


def test_a_rotation_in_one_process_is_honoured_by_another_at_once(server, client, fake, dsn, start_server):
    """Two processes on one database: the second one cached the old webhook secret;
    a webhook signed with the secret rotated through the first is accepted by the
    second straight away (a failed check reads the secret afresh), the old one refused."""
    other = start_server(dsn, PAYCAST_RAZORPAY_API_BASE=fake.url)
    old_secret, new_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    created = client.post("/v1/connector_accounts", json=_body(fake.add_account(), old_secret)).json()

    def send(secret: str) -> int:
        raw = json.dumps({"entity": "event", "event": "payment.captured", "contains": ["payment"],
                          "created_at": int(time.time()), "payload": {"payment": {"entity": {
                              "id": "pay_" + secrets.token_hex(7), "entity": "payment", "amount": 1000,
                              "currency": "INR", "status": "captured",
                              "order_id": "order_" + secrets.token_hex(7), "notes": {}}}}}).encode()
        with other.client() as anonymous:
            return anonymous.post(other.url + created["webhook_path"], content=raw, headers={
                "Content-Type": "application/json", "X-Razorpay-Event-Id": "evt_" + secrets.token_hex(8),
                "X-Razorpay-Signature": sign(secret, raw)}).status_code

    assert send(old_secret) == 200  # the other process now holds the old secret in its cache
    r = client.post(f"/v1/connector_accounts/{created['id']}", json={"webhook_secret": new_secret})
    expect(r, 200)
    assert send(new_secret) == 200
    assert send(old_secret) == 400


def test_a_disabled_account_still_settles_what_is_in_flight(client, fake):
    """DELETE disables: no new payment goes to the account, but the authorisation it
    holds is captured and refunded through it, and its webhooks are still applied."""
    account = fake.add_account()
    webhook_secret = secrets.token_urlsafe(24)
    created = client.post("/v1/connector_accounts", json=_body(account, webhook_secret)).json()
    account.webhook_url = str(client.base_url.join(created["webhook_path"]))
    account.webhook_secret = webhook_secret
    payment = client.post("/v1/payments", json={
        "amount": 50000, "currency": "INR", "payment_method": {"type": "card"}, "connector": "razorpay",
        "capture_method": "manual", "confirm": True}).json()
    assert payment["status"] == "requires_action", payment
    assert client.delete(f"/v1/connector_accounts/{created['id']}").json()["status"] == "disabled"
    order_id = payment["next_action"]["connector_sdk"]["data"]["order_id"]
    fake.pay(order_id)  # its webhook reaches the disabled account's path and is applied
    wait_for(lambda: client.get(f"/v1/payments/{payment['id']}").json()["status"] == "requires_capture")
    captures = fake.count("POST", r"/v1/payments/\w+/capture")
    r = client.post(f"/v1/payments/{payment['id']}/capture", json={})
    expect(r, 200)
    assert r.json()["status"] == "succeeded", r.text
    assert fake.count("POST", r"/v1/payments/\w+/capture") == captures + 1
    refund = client.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 1000})
    expect(refund, 201)
    assert refund.json()["status"] in ("pending", "succeeded"), refund.text
    r = client.post("/v1/payments", json={"amount": 50000, "currency": "INR", "payment_method": {"type": "upi"},
                                          "connector": "razorpay", "confirm": True})
    expect(r, 400)
    assert r.json()["error"]["param"] == "connector", r.text
