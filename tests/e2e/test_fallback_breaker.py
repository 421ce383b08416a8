"""Fallback only when nothing was charged; open circuits skipped; half-open lets
exactly one probe through, even under concurrent traffic."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from tests.support import ServerProcess, expect, payment_body


def _flaky(client) -> dict:
    return next(c for c in client.get("/v1/connectors").json() if c["name"] == "flaky")


def test_only_declared_safe_errors_fall_back(new_database):
    # flaky always fails: half its failures are 500s (declared "not processed"),
    # half are timeouts (may have charged). Breakers never open here.
    server = ServerProcess(new_database("paycast_safe"), PAYCAST_FLAKY_ERROR_RATE="1.0",
                           PAYCAST_BREAKER_FAILURE_THRESHOLD="1.0", PAYCAST_BREAKER_MIN_CALLS="1000").start()
    try:
        with server.client(server.create_merchant()) as c:
            expect(c.put("/v1/routing", json={"strategy": "priority",
                                              "connectors": ["flaky", "mockstripe"]}), 200)
            results = [c.post("/v1/payments", json=payment_body(confirm=True)).json() for _ in range(24)]
        kinds = set()
        for p in results:
            first = p["attempts"][0]
            assert first["connector"] == "flaky"
            if first["error_code"] == "connector_server_error":
                kinds.add("500")
                assert [a["connector"] for a in p["attempts"]] == ["flaky", "mockstripe"]
                assert first["status"] == "failed"
                assert p["status"] == "succeeded"
            else:
                kinds.add("timeout")
                assert first["error_code"] == "connector_timeout"
                # Maybe charged: no second attempt, left for reconciliation.
                assert len(p["attempts"]) == 1, p
                assert first["status"] == "unknown", p
                assert p["status"] == "processing"
        assert kinds == {"500", "timeout"}
    finally:
        server.stop()


def test_open_circuit_is_skipped_and_half_open_lets_one_probe_through(new_database):
    server = ServerProcess(new_database("paycast_probe"), PAYCAST_FLAKY_ERROR_RATE="1.0",
                           PAYCAST_BREAKER_MIN_CALLS="4", PAYCAST_BREAKER_OPEN_S="2").start()
    try:
        with server.client(server.create_merchant()) as c:
            c.put("/v1/routing", json={"strategy": "priority", "connectors": ["flaky", "mockstripe"]})
            for _ in range(4):  # four failures open flaky's circuit
                c.post("/v1/payments", json=payment_body(connector="flaky", confirm=True))
            assert _flaky(c)["state"] == "open"
            assert _flaky(c)["attempts"] == 4
            opened = time.monotonic()
            # Open: routed payments skip flaky altogether (no attempt on it).
            p = c.post("/v1/payments", json=payment_body(confirm=True)).json()
            assert [a["connector"] for a in p["attempts"]] == ["mockstripe"]
            assert p["status"] == "succeeded"
            # Pinned to the open connector: refused without calling it.
            p = c.post("/v1/payments", json=payment_body(connector="flaky", confirm=True)).json()
            assert p["attempts"][0]["error_code"] == "connector_unavailable"
            assert _flaky(c)["attempts"] == 4
            time.sleep(max(0.0, 2.2 - (time.monotonic() - opened)))
            assert _flaky(c)["state"] == "half_open"

            def pinned(_):
                return c.post("/v1/payments", json=payment_body(connector="flaky", confirm=True)).json()

            with ThreadPoolExecutor(12) as pool:
                burst = list(pool.map(pinned, range(12)))
            # Exactly one of the twelve concurrent payments reached flaky (the probe)…
            assert _flaky(c)["attempts"] == 5
            codes = sorted(p["attempts"][0]["error_code"] for p in burst)
            assert codes.count("connector_unavailable") == 11, codes
            # …and its failure re-opened the circuit for another period.
            assert _flaky(c)["state"] == "open"
    finally:
        server.stop()


def test_capture_and_void_errors_are_typed_not_500(server, client):
    """Capture and void go through the connector-call helper: a connector that
    cannot be reached is a 503 ``unavailable`` and the payment does not move."""
    from tests.support import db_fetch

    for action in ("capture", "cancel"):
        p = client.post("/v1/payments", json=payment_body(capture_method="manual", confirm=True)).json()
        assert p["status"] == "requires_capture"
        real = p["connector"]
        db_fetch(server.dsn, "UPDATE payments SET connector = 'nowhere' WHERE id = $1", p["id"])
        r = client.post(f"/v1/payments/{p['id']}/{action}", json={})
        expect(r, 503, note=action)
        assert r.json()["error"]["type"] == "api_error"
        assert r.json()["error"]["code"] == "unavailable"
        assert client.get(f"/v1/payments/{p['id']}").json()["status"] == "requires_capture"
        db_fetch(server.dsn, "UPDATE payments SET connector = $2 WHERE id = $1", p["id"], real)
        done = client.post(f"/v1/payments/{p['id']}/{action}", json={})
        expect(done, 200)
        assert done.json()["status"] == ("succeeded" if action == "capture"
                                                                     else "canceled"), done.text
