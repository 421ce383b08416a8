"""Money invariants under concurrent requests (real server, real HTTP, threads)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.support import db_fetch, expect, payment_body


def _parallel(n: int, fn):
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda i: fn(i), range(n)))


def test_20_concurrent_confirms_make_one_successful_attempt(server, api_key, db_dsn):
    with server.client(api_key) as c:
        pay = c.post("/v1/payments", json=payment_body(1234)).json()

    def confirm(_):
        with server.client(api_key) as c:
            return c.post(f"/v1/payments/{pay['id']}/confirm")

    responses = _parallel(20, confirm)
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1, statuses
    assert statuses.count(409) == 19, statuses
    assert all(r.json()["error"]["code"] == "payment_unexpected_state" for r in responses if r.status_code == 409)

    attempts = db_fetch(db_dsn, "SELECT status FROM payment_attempts WHERE payment_id = $1", pay["id"])
    events = db_fetch(db_dsn, "SELECT type FROM events WHERE object_id = $1", pay["id"])
    assert [a["status"] for a in attempts] == ["succeeded"]
    assert sorted(e["type"] for e in events) == ["payment.created", "payment.succeeded"]


def test_20_concurrent_requests_with_one_idempotency_key_execute_once(server, api_key):
    body = payment_body(4321, confirm=True)

    def create(_):
        with server.client(api_key) as c:
            return c.post("/v1/payments", json=body, headers={"Idempotency-Key": "same-key-20"})

    responses = _parallel(20, create)
    ok = [r for r in responses if r.status_code == 201]
    busy = [r for r in responses if r.status_code == 409]
    assert len(ok) + len(busy) == 20, [r.status_code for r in responses]
    assert all(r.json()["error"]["code"] == "idempotency_key_in_use" for r in busy)
    assert all(r.json()["error"]["type"] == "idempotency_error" for r in busy)
    assert len({r.json()["id"] for r in ok}) == 1
    with server.client(api_key) as c:
        listed = c.get("/v1/payments", params={"limit": 100}).json()["data"]
        assert [p["amount"] for p in listed].count(4321) == 1
        replay = c.post("/v1/payments", json=body, headers={"Idempotency-Key": "same-key-20"})
        expect(replay, 201)
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["id"] == ok[0].json()["id"]


def test_concurrent_captures_never_exceed_capturable(server, api_key):
    with server.client(api_key) as c:
        pay = c.post("/v1/payments", json=payment_body(1000, capture_method="manual", confirm=True)).json()

    def capture(i):
        with server.client(api_key) as c:
            return c.post(f"/v1/payments/{pay['id']}/capture", json={"amount": 600 + i})

    responses = _parallel(10, capture)
    assert sorted(r.status_code for r in responses).count(200) == 1
    with server.client(api_key) as c:
        final = c.get(f"/v1/payments/{pay['id']}").json()
    assert final["status"] == "succeeded"
    assert 600 <= final["amount_received"] <= 609
    assert final["amount_capturable"] == 0
