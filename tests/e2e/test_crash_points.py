"""kill -9 *inside* a unit of work (storage/crashpoints.py, a test-only hook):
just before its COMMIT, or after COMMIT but before the caller is answered.

The n-th unit of work of the process dies, whatever it is (a create, a
confirm, a refund, a wallet move, background work), so the test does not
depend on how storage is cut into units. After a restart on the same
database, every acknowledged response is still true and ``run.py check``
passes; the request in flight when the process died is allowed to have
happened or not, but never half way.
"""

from __future__ import annotations

import signal

import httpx
import pytest

from tests.support import CARD_OK, expect, payment_body, run_check, wait_for

SETTINGS = {"PAYCAST_SIM_DELAY_MS": "20"}


def _payments_only(server, api_key: str, acked: dict) -> None:
    """``confirm: true`` payments until the server dies: the hot path (group commit)."""
    with server.client(api_key, timeout=10) as c:
        for i in range(200):
            r = c.post("/v1/payments", json=payment_body(100 + i, confirm=True))
            expect(r, 201)
            acked["payments"][r.json()["id"]] = r.json()


def _mixed(server, api_key: str, acked: dict) -> None:
    """Mixed writes until the server dies; fills ``acked`` with what was answered 2xx."""
    with server.client(api_key, timeout=10) as c:
        account = c.post("/v1/accounts", json={"customer_id": "cus_crash", "currency": "INR"})
        expect(account, 201)
        acked["account"] = account.json()["id"]
        for i in range(200):
            kind = i % 5
            if kind == 0:
                r = c.post("/v1/payments", json=payment_body(1000 + i, confirm=True))
            elif kind == 1:
                r = c.post("/v1/payments", json=payment_body(2000 + i, capture_method="manual", confirm=True))
                if r.status_code == 201:
                    acked["payments"][r.json()["id"]] = r.json()
                    r = c.post(f"/v1/payments/{r.json()['id']}/capture", json={"amount": 1500})
            elif kind == 2 and acked["payments"]:
                target = next(p for p in reversed(acked["payments"].values()) if p["status"] == "succeeded")
                r = c.post("/v1/refunds", json={"payment_id": target["id"], "amount": 100})
                if r.status_code == 201:
                    acked["refunds"][r.json()["id"]] = r.json()
                continue
            elif kind == 3:
                r = c.post(f"/v1/accounts/{acked['account']}/deposits",
                           json={"amount": 500, "payment_method": CARD_OK})
                if r.status_code == 201:
                    acked["transactions"][r.json()["id"]] = r.json()
                continue
            else:
                r = c.post(f"/v1/accounts/{acked['account']}/withdrawals", json={"amount": 50})
                if r.status_code == 201:
                    acked["transactions"][r.json()["id"]] = r.json()
                continue
            assert r.status_code in (200, 201), r.text
            acked["payments"][r.json()["id"]] = r.json()


@pytest.mark.slow
@pytest.mark.parametrize(("workload", "point"), [
    (_payments_only, "before_commit:4"), (_payments_only, "after_commit:4"),
    (_mixed, "before_commit:7"), (_mixed, "after_commit:19"),
], ids=["payments-before_commit:4", "payments-after_commit:4", "mixed-before_commit:7", "mixed-after_commit:19"])
def test_kill9_inside_a_unit_of_work_keeps_acknowledged_state(new_database, start_server, workload, point):
    dsn = new_database("paycast_crashpoint")
    server = start_server(dsn, PAYCAST_TEST_CRASH_POINT=point, **SETTINGS)
    api_key = server.create_merchant("crash")
    acked: dict = {"payments": {}, "refunds": {}, "transactions": {}}
    with pytest.raises(httpx.TransportError):
        workload(server, api_key, acked)
    # It died at the crash point, not of something else.
    assert server.wait_exit(10) == -signal.SIGKILL
    assert any("crash point" in line for line in server.stderr_lines), "".join(server.stderr_lines)

    restarted = start_server(dsn, **SETTINGS)
    with restarted.client(api_key) as c:
        for pay in acked["payments"].values():
            got = c.get(f"/v1/payments/{pay['id']}").json()
            if pay["status"] in ("succeeded", "failed", "canceled"):  # acknowledged terminal: unchanged
                assert got["status"] == pay["status"], (pay, got)
                assert got["amount_received"] == pay["amount_received"], (pay, got)
            else:  # a manual payment whose capture was not acknowledged
                assert got["status"] in (pay["status"], "succeeded"), (pay, got)
        for refund in acked["refunds"].values():
            got = c.get(f"/v1/refunds/{refund['id']}")
            expect(got, 200)
            assert got.json()["amount"] == refund["amount"], got.text
        for txn in acked["transactions"].values():
            got = c.get(f"/v1/transactions/{txn['id']}")
            expect(got, 200)
            assert got.json()["amount"] == txn["amount"], got.text
        # Every acknowledged event-producing write is in the event log, gap-free (check verifies seq).
        pay_events = {e["data"]["object"]["id"] for e in _all_events(c) if e["type"].startswith("payment.")}
        assert set(acked["payments"]) <= pay_events

    def consistent():
        result = run_check(dsn)
        return result if result.returncode == 0 else None

    # Deposits and refunds still in flight settle through webhooks after the restart.
    wait_for(consistent, timeout=30, interval=1)


def _all_events(c: httpx.Client) -> list[dict]:
    events, after = [], 0
    while True:
        page = c.get("/v1/events", params={"after_seq": after, "limit": 100}).json()["data"]
        if not page:
            return events
        events.extend(page)
        after = max(e["seq"] for e in page)
