"""Tenant isolation, generated from the route table: every merchant route that
names an object is called by another merchant with the owner's ids, and must
answer 404 without leaking anything. A new route with an id parameter this
test does not know fails here until it is covered."""

from __future__ import annotations

import re
import types

import pytest

from config import load_settings
from tests.support import UPI, db_fetch, expect, payment_body, store_connector_account, wait_for

# Path parameters that are not object ids owned by a merchant, with the reason.
NOT_OBJECT_IDS = {
    "name": "console list and asset names are fixed names, not objects",
    "connector": "connector names are global (webhooks in, public)",
    "client_id": "client ids are names in the caller's own namespace, not objects",
    "inbox_id": "the gateway webhook inbox is global and admin-only (merchant keys get 401: test_inbox_dead_letters)",
}


# Console pages are the same static HTML for anyone; their data comes from the API with the key.
STATIC_PAGES = "/dashboard/"

# Valid bodies, so that the request gets past validation to the ownership check.
VALID_BODIES = {
    "/evidence": {"text": "receipt attached"},
    "/deposits": {"amount": 100, "payment_method": {"type": "card", "card": {"number": "4242424242424242"}}},
    "/withdrawals": {"amount": 100},
}


def _routes():
    from app.server import create_app

    app = create_app(types.SimpleNamespace(settings=load_settings()), "unused")
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.rule, method


PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _not_tried(path: str) -> str | None:
    """Why a route with a path parameter is not generated as a case (None: it is).

    Console pages under STATIC_PAGES are the same HTML for everyone (their data comes
    from the API, tried here); a route whose parameters include one of NOT_OBJECT_IDS
    names no object a merchant owns. A parameter that is in neither list is generated
    and fails until the test knows an owner object for it.
    """
    if path.startswith(STATIC_PAGES):
        return "static console page; tenant isolation is the API's (GET /v1/payments/{id}/timeline)"
    return next((NOT_OBJECT_IDS[p] for p in PARAM.findall(path) if p in NOT_OBJECT_IDS), None)


# Only routes that name an object: the others are left out here rather than
# generated and skipped, so the suite reports no skips.
ROUTES = [(path, method) for path, method in _routes() if "<" in path and _not_tried(path) is None]


@pytest.fixture(scope="module")
def owner_objects(server, db_dsn):
    """Objects of merchant A, by path parameter name."""
    api_key = server.create_merchant("owner")
    with server.client(api_key) as c:
        endpoint = c.post("/v1/webhook_endpoints", json={"url": "http://127.0.0.1:9/hook",
                                                         "enabled_events": ["*"]}).json()
        order = c.post("/v1/orders", json={"amount": 1000, "currency": "INR", "customer_id": "cus_owner"}).json()
        pay = c.post("/v1/payments", json=payment_body(1000, order_id=order["id"], confirm=True)).json()
        c.post("/v1/payments", json=payment_body(method=UPI("pending@upi"), confirm=True))
        refund = c.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 100}).json()
        disputed = c.post("/v1/payments", json=payment_body(
            method={"type": "card", "card": {"number": "4000000000000259"}}, confirm=True)).json()
        dispute = wait_for(lambda: c.get("/v1/disputes", params={"payment_id": disputed["id"]}).json()["data"])[0]
        account = c.post("/v1/accounts", json={"customer_id": "cus_owner", "currency": "INR"}).json()
        deposit = c.post(f"/v1/accounts/{account['id']}/deposits",
                         json={"amount": 500, "payment_method": payment_body()["payment_method"]}).json()
        event = c.get("/v1/events").json()["data"][0]
        delivery = wait_for(lambda: c.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries").json()["data"])[0]
    merchant_id = db_fetch(db_dsn, "SELECT merchant_id FROM payments WHERE id = $1", pay["id"])[0]["merchant_id"]
    mca_id = store_connector_account(db_dsn, merchant_id)
    with server.client(api_key) as c:
        expect(c.get(f"/v1/connector_accounts/{mca_id}"), 200)  # the owner sees it
    return {"mca_id": mca_id, "payment_id": pay["id"], "order_id": order["id"], "event_id": event["id"], "refund_id": refund["id"],
            "dispute_id": dispute["id"], "account_id": account["id"], "transaction_id": deposit["id"],
            "endpoint_id": endpoint["id"], "delivery_id": delivery["id"]}


@pytest.mark.parametrize("path,method", ROUTES, ids=[f"{m} {p}" for p, m in ROUTES])
def test_other_merchant_gets_404(server, owner_objects, path, method):
    params = PARAM.findall(path)
    missing = [p for p in params if p not in owner_objects]
    assert not missing, f"route {method} {path}: add an owner object for {missing} to this test"
    url = PARAM.sub(lambda m: owner_objects[m.group(1)], path)
    with server.client(server.create_merchant("intruder")) as intruder:
        body = next((b for suffix, b in VALID_BODIES.items() if path.endswith(suffix)), {})
        r = intruder.request(method, url, json=body if method in ("POST", "PUT") else None)
    expect(r, 404)
    assert r.json()["error"]["type"] == "not_found"
    for value in owner_objects.values():
        assert value not in r.text or value in url
