"""Every acknowledged write survives ``kill -9`` of the server.

Here the kill comes between requests; kills *inside* a unit of work (before
COMMIT, after COMMIT before the reply) are in test_crash_points.py."""

from __future__ import annotations

from tests.support import expect, payment_body, run_check


def test_kill9_right_after_200_keeps_payment_and_event(new_database, start_server):
    dsn = new_database("paycast_crash")
    first = start_server(dsn)
    try:
        api_key = first.create_merchant()
        with first.client(api_key) as c:
            pay = c.post("/v1/payments", json=payment_body(777, confirm=True)).json()
            assert pay["status"] == "succeeded"
        first.kill9()
    finally:
        first.stop()
    second = start_server(dsn)
    try:
        with second.client(api_key) as c:
            got = c.get(f"/v1/payments/{pay['id']}").json()
            assert got["status"] == "succeeded"
            assert got["amount_received"] == 777
            types = [e["type"] for e in c.get("/v1/events", params={"object_id": pay["id"]}).json()["data"]]
            assert types == ["payment.succeeded", "payment.created"]
        check = run_check(dsn)
        assert check.returncode == 0, check.stdout
    finally:
        second.stop()


def test_sigterm_drains_and_exits_cleanly(new_database, start_server):
    server = start_server(new_database("paycast_term"))
    api_key = server.create_merchant()
    with server.client(api_key) as c:
        expect(c.post("/v1/payments", json=payment_body(confirm=True)), 201)
    assert server.stop() == 0
    assert not any("Traceback" in line for line in server.stderr_lines), "".join(server.stderr_lines)
