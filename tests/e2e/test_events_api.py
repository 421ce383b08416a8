"""The events API over the merchant features' events: filters (type, type
prefix wildcards, object_id, after_seq), catching up page by page without
gaps, retrieval, and bad parameters answered 400."""

from __future__ import annotations

from tests.support import CARD_DECLINED, CARD_OK, expect, payment_body, wait_for


def _settle_all(client):
    account = client.post("/v1/accounts", json={"customer_id": "cus_ev", "currency": "INR"}).json()
    ok = client.post(f"/v1/accounts/{account['id']}/deposits", json={"amount": 5000, "payment_method": CARD_OK}).json()
    # A deposit answers pending and completes when its payment's actor confirms it; two at once
    # complete in either order. The order of events below is asserted, so one after the other.
    wait_for(lambda: client.get(f"/v1/transactions/{ok['id']}").json()["status"] == "completed")
    bad = client.post(f"/v1/accounts/{account['id']}/deposits",
                      json={"amount": 100, "payment_method": CARD_DECLINED}).json()
    wait_for(lambda: client.get(f"/v1/transactions/{bad['id']}").json()["status"] == "failed")
    out = client.post(f"/v1/accounts/{account['id']}/withdrawals", json={"amount": 1000}).json()
    wait_for(lambda: client.get(f"/v1/transactions/{out['id']}").json()["status"] == "completed")
    pay = client.post("/v1/payments", json=payment_body(700, customer_id="cus_ev", confirm=True)).json()
    refund = client.post("/v1/refunds", json={"payment_id": pay["id"]}).json()
    wait_for(lambda: client.get(f"/v1/refunds/{refund['id']}").json()["status"] == "succeeded")
    return account, ok, bad, out, refund


def test_new_event_types_filters_and_catch_up(client):
    account, ok, bad, out, refund = _settle_all(client)
    accounts = client.get("/v1/events", params={"type": "account.*"}).json()["data"]
    assert [(e["type"], e["data"]["object"]["id"]) for e in accounts] == [
        ("account.withdrawal.completed", out["id"]), ("account.deposit.failed", bad["id"]),
        ("account.deposit.completed", ok["id"])]
    assert all(e["data"]["object"]["customer_id"] == "cus_ev" for e in accounts)
    deposits = client.get("/v1/events", params={"type": "account.deposit.*"}).json()["data"]
    assert {e["type"] for e in deposits} == {"account.deposit.completed", "account.deposit.failed"}
    exact = client.get("/v1/events", params={"type": "account.deposit.failed"}).json()["data"]
    assert [e["data"]["object"]["id"] for e in exact] == [bad["id"]]
    refunds = client.get("/v1/events", params={"object_id": refund["id"]}).json()["data"]
    assert [e["type"] for e in refunds] == ["refund.succeeded"]
    assert client.get("/v1/events", params={"type": "dispute.*"}).json()["data"] == []
    # Catch up from the start, three at a time, oldest first, without gaps.
    everything = client.get("/v1/events", params={"limit": 100}).json()["data"]
    seen, cursor = [], None
    while True:
        params = {"after_seq": 0, "limit": 3, **({"starting_after": cursor} if cursor else {})}
        page = client.get("/v1/events", params=params).json()
        seen += page["data"]
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    assert [e["seq"] for e in seen] == list(range(1, len(everything) + 1))
    assert [e["id"] for e in seen] == [e["id"] for e in everything[::-1]]
    middle = seen[len(seen) // 2]["seq"]
    later_accounts = client.get("/v1/events", params={"type": "account.*", "after_seq": middle}).json()["data"]
    assert all(e["seq"] > middle and e["type"].startswith("account.") for e in later_accounts)
    assert [e["seq"] for e in later_accounts] == sorted(e["seq"] for e in later_accounts)
    one = client.get(f"/v1/events/{accounts[0]['id']}").json()
    assert one == accounts[0]
    assert one["object"] == "event"


def test_bad_event_parameters_are_400_never_500(client):
    for value in ("-1", "x", "1.5", "²", "99999999999999999999999", "9" * 5000):  # int() refuses > 4,300 digits
        r = client.get("/v1/events", params={"after_seq": value})
        expect(r, 400, note=value)
        assert r.json()["error"]["param"] == "after_seq", (value, r.text)
    for value in ("²", "0", "1000", "abc"):
        r = client.get("/v1/events", params={"limit": value})
        expect(r, 400, note=value)
        assert r.json()["error"]["param"] == "limit", (value, r.text)
    assert client.get("/v1/events", params={"type": "nope.*"}).json()["data"] == []
    assert client.get("/v1/events", params={"starting_after": "evt_nope"}).json()["data"] == []
