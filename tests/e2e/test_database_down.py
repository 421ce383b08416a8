"""PostgreSQL stops under the server: requests get 503 ``unavailable`` promptly,
nothing hangs, and service resumes by itself when the database returns."""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import expect, payment_body, run_check, wait_for


@pytest.fixture
def own_postgres():
    from pg.cluster import EmbeddedPostgres

    tmp = tempfile.mkdtemp(prefix="pcdown", dir="/tmp")
    pg = EmbeddedPostgres(pathlib.Path(tmp))
    pg.start()
    pg.ensure_database("paycast")
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_database_down_gives_503_then_recovers(own_postgres, start_server):
    server = start_server(own_postgres.dsn("paycast"), PAYCAST_DB_CONNECT_TIMEOUT_S="1")
    try:
        api_key = server.create_merchant()
        with server.client(api_key, timeout=20) as c:
            before = c.post("/v1/payments", json=payment_body(confirm=True)).json()
            assert before["status"] == "succeeded"
            own_postgres.stop()

            def one(i):
                started = time.monotonic()
                r = c.post("/v1/payments", json=payment_body(confirm=True)) if i % 2 else c.get(
                    f"/v1/payments/{before['id']}")
                return r, time.monotonic() - started

            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(one, range(16)))
            for r, elapsed in results:
                expect(r, 503)
                assert r.json()["error"]["type"] == "api_error"
                assert r.json()["error"]["code"] == "unavailable"
                # "Does not hang", not a speed test: a shared 2-core machine can be slow, so
                # the bound is only under the client's 20 s timeout (connect timeout is 1 s).
                assert elapsed < 15, f"a request took {elapsed:.1f}s with the database down"
            expect(c.get("/healthz"), 200)
            expect(c.get("/readyz"), 503)

            own_postgres.start()
            recovered = wait_for(lambda: (r := c.post("/v1/payments", json=payment_body(confirm=True))).status_code
                                 == 201 and r.json(), timeout=30, interval=0.3)
            assert recovered["status"] == "succeeded"
            assert c.get(f"/v1/payments/{before['id']}").json()["status"] == "succeeded"
            expect(c.get("/readyz"), 200)
        assert run_check(own_postgres.dsn("paycast")).returncode == 0
    finally:
        server.stop()
