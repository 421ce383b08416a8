"""Every route of the merchant features answers 404 for another merchant's
objects, exactly as for missing ones, and lists never show them."""

from __future__ import annotations

from tests.receiver import Receiver
from tests.support import CARD_OK, expect, payment_body, wait_for

CARD_DISPUTED = {"type": "card", "card": {"number": "4000000000000259"}}


def test_other_merchants_objects_are_404_on_every_new_route(server):
    owner_key, other_key = server.create_merchant("owner"), server.create_merchant("other")
    with server.client(owner_key) as owner, server.client(other_key) as other, Receiver() as receiver:
        endpoint = owner.post("/v1/webhook_endpoints", json={"url": receiver.url, "enabled_events": ["*"]}).json()
        pay = owner.post("/v1/payments", json=payment_body(2000, confirm=True)).json()
        refund = owner.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 500}).json()
        disputed = owner.post("/v1/payments", json=payment_body(900, method=CARD_DISPUTED, confirm=True)).json()
        dispute = wait_for(lambda: owner.get("/v1/disputes", params={"payment_id": disputed["id"]}).json()["data"])[0]
        account = owner.post("/v1/accounts", json={"customer_id": "cus_iso", "currency": "INR"}).json()
        deposit = owner.post(f"/v1/accounts/{account['id']}/deposits",
                             json={"amount": 3000, "payment_method": CARD_OK}).json()
        wait_for(lambda: owner.get(f"/v1/transactions/{deposit['id']}").json()["status"] == "completed")
        delivery = wait_for(lambda: owner.get(f"/v1/webhook_endpoints/{endpoint['id']}/deliveries").json()["data"])[0]

        requests = [
            ("POST", "/v1/refunds", {"payment_id": pay["id"], "amount": 1}),
            ("GET", f"/v1/refunds/{refund['id']}", None),
            ("GET", f"/v1/disputes/{dispute['id']}", None),
            ("POST", f"/v1/disputes/{dispute['id']}/evidence", {"text": "mine"}),
            ("POST", f"/v1/disputes/{dispute['id']}/accept", None),
            ("GET", f"/v1/accounts/{account['id']}", None),
            ("POST", f"/v1/accounts/{account['id']}/deposits", {"amount": 100, "payment_method": CARD_OK}),
            ("POST", f"/v1/accounts/{account['id']}/withdrawals", {"amount": 100}),
            ("GET", f"/v1/accounts/{account['id']}/transactions", None),
            ("GET", f"/v1/transactions/{deposit['id']}", None),
            ("GET", f"/v1/webhook_endpoints/{endpoint['id']}", None),
            ("GET", f"/v1/webhook_endpoints/{endpoint['id']}/deliveries", None),
            ("POST", f"/v1/webhook_endpoints/{endpoint['id']}/deliveries/{delivery['id']}/retry", None),
            ("DELETE", f"/v1/webhook_endpoints/{endpoint['id']}", None),
        ]
        for method, path, body in requests:
            r = other.request(method, path, json=body)
            expect(r, 404, note=(method, path))
            assert r.json()["error"]["type"] == "not_found"
        for path in ("/v1/refunds", "/v1/disputes", "/v1/accounts", "/v1/webhook_endpoints"):
            assert other.get(path).json()["data"] == [], path
            assert owner.get(path).json()["data"], path
        assert other.get("/v1/refunds", params={"payment_id": pay["id"]}).json()["data"] == []
        assert other.get("/v1/balance").json()["data"] == []
        # Nothing of the owner's changed.
        assert owner.get(f"/v1/disputes/{dispute['id']}").json()["status"] == "needs_response"
        assert owner.get(f"/v1/accounts/{account['id']}").json()["balance"] == 3000
        assert owner.get(f"/v1/payments/{pay['id']}").json()["amount_refunded"] == 500
        expect(owner.get(f"/v1/webhook_endpoints/{endpoint['id']}"), 200)
