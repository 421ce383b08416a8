"""Payment transitions raced for real: two server processes on one database,
requests released together by a barrier against one payment.

One process's payment actor serialises its own commands, so only a second
process contends on the database's guard (the conditional update / row lock).
Each request runs on its own thread with an already-open connection and waits
at a ``threading.Barrier``, so they leave within microseconds of each other.

The verdict is counted where a real gateway would count it — at the simulated
connector (gateways/call_journal.py, ``PAYCAST_SIM_CALL_LOG``): exactly one call
of each kind reaches it, exactly one terminal event is written, and
``run.py check`` passes.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from gateways import call_journal
from tests.support import ServerProcess, UPI, db_fetch, expect, payment_body, run_check, sign_stripe, stop_all, wait_for

pytestmark = pytest.mark.slow
TERMINAL = ("payment.succeeded", "payment.failed", "payment.canceled")


class Pair:
    """Two processes on one database sharing one simulator call journal."""

    def __init__(self, dsn: str, journal: str, a: ServerProcess, b: ServerProcess, api_key: str) -> None:
        self.dsn, self.journal, self.a, self.b, self.api_key = dsn, journal, a, b, api_key

    def calls(self, op: str, *, payment_id: str | None = None, ref: str | None = None) -> list[dict]:
        return [c for c in call_journal.read(self.journal) if c["op"] == op
                and (payment_id is None or c["payment_id"] == payment_id) and (ref is None or c["ref"] == ref)]

    def race(self, requests: list[tuple[str, str, dict | None]]) -> list[httpx.Response]:
        """Send ``(method, path, json)`` requests at once, alternating between the two processes."""
        barrier = threading.Barrier(len(requests))

        def one(i: int) -> httpx.Response:
            method, path, body = requests[i]
            server = self.a if i % 2 == 0 else self.b
            with server.client(self.api_key) as c:
                expect(c.get("/healthz"), 200)  # connection open before the barrier
                barrier.wait(timeout=30)
                return c.request(method, path, json=body)

        with ThreadPoolExecutor(len(requests)) as pool:
            return list(pool.map(one, range(len(requests))))

    def events(self, object_id: str) -> list[str]:
        return [r["type"] for r in db_fetch(self.dsn, "SELECT type FROM events WHERE object_id = $1 ORDER BY seq",
                                            object_id)]

    def assert_check_passes(self) -> None:
        result = run_check(self.dsn)
        assert result.returncode == 0, result.stdout


def _pair(new_database, tmp_path_factory, name: str, **env: str):
    dsn = new_database(name)
    journal = str(tmp_path_factory.mktemp(name) / "calls.jsonl")
    env = {"PAYCAST_SIM_CALL_LOG": journal, **env}
    a = ServerProcess(dsn, **env)
    b = ServerProcess(dsn, **env)
    try:
        a.start()
        b.start()
        yield Pair(dsn, journal, a, b, a.create_merchant("racer"))
    finally:
        stop_all([a, b])


@pytest.fixture(scope="module")
def pair(new_database, tmp_path_factory):
    yield from _pair(new_database, tmp_path_factory, "paycast_races")


def _codes(responses: list[httpx.Response]) -> list[int]:
    return sorted(r.status_code for r in responses)


def test_many_confirms_reach_the_connector_once(pair):
    with pair.a.client(pair.api_key) as c:
        pay = c.post("/v1/payments", json=payment_body(1234)).json()
    responses = pair.race([("POST", f"/v1/payments/{pay['id']}/confirm", None)] * 16)
    assert _codes(responses) == [200] + [409] * 15, [r.text for r in responses]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"payment_unexpected_state"}
    assert len(pair.calls("authorize", payment_id=pay["id"])) == 1
    assert pair.events(pay["id"]) == ["payment.created", "payment.succeeded"]
    pair.assert_check_passes()


def _authorized(pair, amount: int = 1000) -> tuple[dict, str]:
    with pair.a.client(pair.api_key) as c:
        pay = c.post("/v1/payments", json=payment_body(amount, capture_method="manual", confirm=True)).json()
    assert pay["status"] == "requires_capture", pay
    return pay, pay["attempts"][0]["connector_txn_id"]


# Found by this test: actors/payment.py's capture/cancel read the status, call the
# connector, and only then write conditionally, so each process's actor calls
# the gateway (two captures of one authorisation, or a capture and a void). The
# claim must be committed before the connector call (docs/architecture.md decision 8).
# Not strict: a race may not reproduce.
def test_many_captures_reach_the_connector_once(pair):
    pay, txn = _authorized(pair)
    responses = pair.race([("POST", f"/v1/payments/{pay['id']}/capture", {"amount": 600 + i}) for i in range(12)])
    assert _codes(responses) == [200] + [409] * 11, [r.text for r in responses]
    assert len(pair.calls("capture", ref=txn)) == 1
    assert pair.events(pay["id"]) == ["payment.created", "payment.requires_capture", "payment.succeeded"]
    pair.assert_check_passes()


def test_cancel_against_capture_one_wins_and_one_call_reaches_the_connector(pair):
    pay, txn = _authorized(pair)
    requests = [("POST", f"/v1/payments/{pay['id']}/capture", None), ("POST", f"/v1/payments/{pay['id']}/cancel", None)]
    responses = pair.race(requests * 6)
    assert _codes(responses) == [200] + [409] * 11, [r.text for r in responses]
    winner = next(r.json() for r in responses if r.status_code == 200)
    assert winner["status"] in ("succeeded", "canceled")
    assert len(pair.calls("capture", ref=txn)) + len(pair.calls("void", ref=txn)) == 1
    assert [t for t in pair.events(pay["id"]) if t in TERMINAL] == [f"payment.{winner['status']}"]
    pair.assert_check_passes()


def test_refund_against_dispute_never_refunds_a_disputed_charge_twice(pair):
    """Refunds and the gateway's dispute webhook (delivered to both processes) race on one payment."""
    with pair.a.client(pair.api_key) as c:
        pay = c.post("/v1/payments", json=payment_body(1000, connector="mockstripe", confirm=True)).json()
    body = json.dumps({"id": f"evt_race_{pay['id']}", "type": "charge.dispute.created", "created": int(time.time()),
                       "data": {"object": {"id": f"du_race_{pay['id']}", "amount": 1000, "currency": "inr",
                                           "status": "needs_response",
                                           "metadata": {"payment_id": pay["id"]}}}}).encode()
    barrier = threading.Barrier(8)

    def dispute(server: ServerProcess) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            expect(c.get("/healthz"), 200)
            barrier.wait(timeout=30)
            return c.post("/webhooks/mockstripe", content=body, headers=sign_stripe(body))

    def refund(server: ServerProcess) -> httpx.Response:
        with server.client(pair.api_key) as c:
            expect(c.get("/healthz"), 200)
            barrier.wait(timeout=30)
            return c.post("/v1/refunds", json={"payment_id": pay["id"], "amount": 400})

    jobs = [(dispute, pair.a), (dispute, pair.b)] + [(refund, pair.a if i % 2 else pair.b) for i in range(6)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(lambda job: job[0](job[1]), jobs))
    assert [r.status_code for r in responses[:2]] == [200, 200]
    refunds = responses[2:]
    assert {r.status_code for r in refunds} <= {201, 409}, [r.text for r in refunds]
    accepted = [r.json() for r in refunds if r.status_code == 201]
    assert len(accepted) <= 2, [r.text for r in refunds]  # 2 × 400 ≤ 1000 < 3 × 400
    assert {r.json()["error"]["code"] for r in refunds if r.status_code == 409} <= {
        "charge_disputed", "refund_exceeds_payment"}, [r.text for r in refunds]
    with pair.a.client(pair.api_key) as c:
        disputes = wait_for(lambda: c.get("/v1/disputes", params={"payment_id": pay["id"]}).json()["data"])
    assert len(disputes) == 1
    assert pair.events(disputes[0]["id"]) == ["dispute.opened"]
    # Each accepted refund reached the connector once; no refused one reached it at all.
    refund_calls = pair.calls("refund", payment_id=pay["id"])
    assert sorted(c["ref"] for c in refund_calls) == sorted(r["id"] for r in accepted)
    pair.assert_check_passes()


@pytest.fixture(scope="module")
def reconciling_pair(new_database, tmp_path_factory):
    """Both processes reconcile eagerly: a payment is overdue as soon as it is processing."""
    yield from _pair(new_database, tmp_path_factory, "paycast_race_recon",
                     PAYCAST_PROCESSING_DEADLINE_S="0.01", PAYCAST_RECONCILE_INTERVAL_S="0.05")


def test_confirm_against_the_reconciler_settles_once(reconciling_pair):
    """``pending@upi`` stays processing until the reconcilers of both processes ask the
    gateway; duplicate confirms are released at once while they poll."""
    pair = reconciling_pair
    with pair.a.client(pair.api_key) as c:
        pays = [c.post("/v1/payments", json=payment_body(700 + i, method=UPI("pending@upi"))).json()
                for i in range(4)]
    responses = pair.race([("POST", f"/v1/payments/{p['id']}/confirm", None) for p in pays for _ in range(4)])
    for i, pay in enumerate(pays):
        mine = responses[i * 4:(i + 1) * 4]
        assert _codes(mine) == [200] + [409] * 3, [r.text for r in mine]
    with pair.a.client(pair.api_key) as c:
        for pay in pays:
            wait_for(lambda: c.get(f"/v1/payments/{pay['id']}").json()["status"] == "succeeded", timeout=30)
    for pay in pays:
        assert len(pair.calls("authorize", payment_id=pay["id"])) == 1
        assert [t for t in pair.events(pay["id"]) if t in TERMINAL] == ["payment.succeeded"]
    pair.assert_check_passes()


def test_one_idempotency_key_across_two_processes_reaches_the_connector_once(pair):
    """``confirm: true`` creates with one key from both processes: one execution, one charge."""
    before = len(pair.calls("authorize"))
    body = payment_body(4321, confirm=True)
    barrier = threading.Barrier(12)

    def create(i: int) -> httpx.Response:
        with (pair.a if i % 2 else pair.b).client(pair.api_key) as c:
            expect(c.get("/healthz"), 200)
            barrier.wait(timeout=30)
            return c.post("/v1/payments", json=body, headers={"Idempotency-Key": "race-key-1"})

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(create, range(12)))
    ok = [r for r in responses if r.status_code == 201]
    busy = [r for r in responses if r.status_code == 409]
    assert len(ok) + len(busy) == 12, [r.text for r in responses]
    assert {r.json()["error"]["code"] for r in busy} <= {"idempotency_key_in_use"}
    assert len({r.json()["id"] for r in ok}) == 1
    calls = pair.calls("authorize")[before:]
    assert [c["payment_id"] for c in calls] == [ok[0].json()["id"]], calls
    pair.assert_check_passes()
