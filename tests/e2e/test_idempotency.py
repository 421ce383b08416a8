"""``Idempotency-Key`` exactly as docs/api.md: replay byte for byte, 422 on reuse, no storing 400s."""

from __future__ import annotations

from tests.support import CARD_DECLINED, expect, payment_body


def test_replay_is_byte_for_byte(client):
    first = client.post("/v1/orders", json={"amount": 500, "currency": "INR"}, headers={"Idempotency-Key": "k1"})
    expect(first, 201)
    assert "Idempotent-Replayed" not in first.headers
    again = client.post("/v1/orders", json={"currency": "INR", "amount": 500}, headers={"Idempotency-Key": "k1"})
    expect(again, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert len(client.get("/v1/orders").json()["data"]) == 1


def test_same_key_different_body_is_422(client):
    client.post("/v1/orders", json={"amount": 500, "currency": "INR"}, headers={"Idempotency-Key": "k2"})
    r = client.post("/v1/orders", json={"amount": 501, "currency": "INR"}, headers={"Idempotency-Key": "k2"})
    expect(r, 422)
    assert r.json()["error"]["type"] == "idempotency_error"
    assert r.json()["error"]["code"] == "idempotency_key_reused"


def test_validation_failures_are_not_stored(client):
    bad = client.post("/v1/orders", json={"amount": -1, "currency": "INR"}, headers={"Idempotency-Key": "k3"})
    expect(bad, 400)
    good = client.post("/v1/orders", json={"amount": 1, "currency": "INR"}, headers={"Idempotency-Key": "k3"})
    expect(good, 201)
    assert "Idempotent-Replayed" not in good.headers


def test_409_and_declines_are_stored_and_replayed(client):
    pay = client.post("/v1/payments", json=payment_body(confirm=True)).json()
    first = client.post(f"/v1/payments/{pay['id']}/confirm", headers={"Idempotency-Key": "k4"})
    expect(first, 409)
    again = client.post(f"/v1/payments/{pay['id']}/confirm", headers={"Idempotency-Key": "k4"})
    expect(again, 409)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content

    declined = client.post("/v1/payments", json=payment_body(method=CARD_DECLINED, confirm=True),
                           headers={"Idempotency-Key": "k5"})
    replay = client.post("/v1/payments", json=payment_body(method=CARD_DECLINED, confirm=True),
                         headers={"Idempotency-Key": "k5"})
    assert replay.json()["id"] == declined.json()["id"]
    assert replay.json()["status"] == "failed"


def test_keys_are_per_merchant(server, client):
    client.post("/v1/orders", json={"amount": 500, "currency": "INR"}, headers={"Idempotency-Key": "shared"})
    with server.client(server.create_merchant("b")) as other:
        r = other.post("/v1/orders", json={"amount": 999, "currency": "USD"}, headers={"Idempotency-Key": "shared"})
        expect(r, 201)
        assert "Idempotent-Replayed" not in r.headers
        assert r.json()["amount"] == 999


def test_key_too_long_is_400(client):
    r = client.post("/v1/orders", json={"amount": 5, "currency": "INR"}, headers={"Idempotency-Key": "x" * 256})
    expect(r, 400)
    assert r.json()["error"]["param"] == "Idempotency-Key"
