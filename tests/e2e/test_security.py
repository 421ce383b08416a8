"""Rate limiting, request ids, and secrets that never leave: not in logs, not in
responses, not in the database."""

from __future__ import annotations

import pytest

from tests.support import ServerProcess, db_fetch, payment_body

CARD = "4000000000000002"


@pytest.fixture(scope="module")
def limited(new_database):
    # A slow refill (0.2 token/s): even on a loaded machine the 12 requests below
    # come faster than tokens return, so the burst of 5 runs out for sure.
    proc = ServerProcess(new_database("paycast_limits"), PAYCAST_RATE_LIMIT_RPS="0.2", PAYCAST_RATE_LIMIT_BURST="5",
                         PAYCAST_LOG_LEVEL="DEBUG").start()
    try:
        yield proc
    finally:
        proc.stop()


def test_rate_limit_per_api_key_with_retry_after(limited):
    key_a, key_b = limited.create_merchant("a"), limited.create_merchant("b")
    with limited.client(key_a) as a, limited.client(key_b) as b:
        codes = [a.get("/v1/payments").status_code for _ in range(12)]
        assert codes[:5] == [200] * 5 and codes.count(429) >= 5, codes
        refused = a.get("/v1/payments")
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert int(refused.headers["Retry-After"]) >= 1
        assert b.get("/v1/payments").status_code == 200  # another key has its own bucket


def test_request_id_is_echoed_or_made(client):
    assert client.get("/v1/payments", headers={"X-Request-Id": "trace-123"}).headers["Request-Id"] == "trace-123"
    assert client.get("/v1/payments").headers["Request-Id"].startswith("req_")


def test_secrets_never_in_logs_responses_or_database(limited):
    api_key = limited.create_merchant("secretive")
    with limited.client(api_key) as c:
        c.post("/v1/payments", json=payment_body(method={"type": "card", "card": {"number": CARD}}, confirm=True))
        bad = c.post("/v1/payments", json=payment_body(method={"type": "card", "card": {"number": CARD[:-1] + "3"}}))
        assert bad.status_code == 400 and CARD[:-1] not in bad.text
        listed = c.get("/v1/payments").text
        assert CARD not in listed and CARD[:6] not in listed and CARD[-4:] in listed
        events = c.get("/v1/events").text
        assert CARD not in events
    logs = "".join(limited.stderr_lines)
    assert CARD not in logs and CARD[:-1] not in logs
    assert api_key not in logs
    for table, column in (("payments", "payment_method"), ("events", "data"), ("idempotency_keys", "response_body"),
                          ("webhook_inbox", "raw_body")):
        rows = db_fetch(limited.dsn, f"SELECT count(*) AS n FROM {table} WHERE {column}::text LIKE $1", f"%{CARD}%")
        assert rows[0]["n"] == 0, table
    assert db_fetch(limited.dsn, "SELECT count(*) AS n FROM merchants WHERE api_key_hash = $1", api_key)[0]["n"] == 0
