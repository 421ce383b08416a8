"""The merchant's hot POSTs answer the same through both edges that can serve them.

Two real servers on one database: one serving the hot POSTs at the ASGI level
(app/merchant_endpoint.py, the default), one through Quart
(``PAYCAST_MERCHANT_POSTS_AT_ASGI=false``). The same requests — successes,
replays, every error object (400 with ``param``, 401, 404, 405, 409, 413, 422,
429 with ``Retry-After``) — get the same status, headers and body from both,
once the ids and times that differ between two payments are masked.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.support import CARD_DECLINED, expect, payment_body

# A generous bucket for the scenario's merchant; the rate-limit test drains another merchant's.
BURST = 60
# Ids (pay_…, att_…, re_…, evt_…) and times differ between two runs of one scenario.
_ID = re.compile(r"\b[a-z]{2,5}_[A-Za-z0-9]{10,}\b")
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T[\d:.]+(Z|[+-]\d{2}:?\d{2})?$")
# Headers each server sets on its own (hypercorn's date and server) or that follow the masked body.
_OWN_HEADERS = {"date", "server", "content-length"}


@pytest.fixture(scope="module")
def servers(new_database):
    from tests.support import ServerProcess

    dsn = new_database("paycast_hot_posts")
    env = {"PAYCAST_RATE_LIMIT_RPS": "1", "PAYCAST_RATE_LIMIT_BURST": str(BURST), "PAYCAST_LOG_LEVEL": "DEBUG"}
    asgi = ServerProcess(dsn, **env).start()
    try:
        quart = ServerProcess(dsn, PAYCAST_MERCHANT_POSTS_AT_ASGI="false", **env).start()
        try:
            yield asgi, quart
        finally:
            quart.stop()
    finally:
        asgi.stop()


def _mask(value):
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        return "<time>" if _ISO_TIME.match(value) else _ID.sub("<id>", value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 1_000_000_000:
        return "<timestamp>"
    return value


def _answer(response) -> tuple:
    headers = {k: v for k, v in response.headers.items() if k not in _OWN_HEADERS}
    body = response.content
    return response.status_code, headers, _mask(json.loads(body)) if body else None


def _scenario(server, api_key: str) -> list[tuple]:
    """Every kind of answer the hot POSTs give, in order, as comparable tuples."""
    answers = []
    with server.client(api_key) as c, server.client() as anon, server.client("sk_test_nope") as wrong:
        def post(client, path, **kw):
            kw.setdefault("headers", {})["X-Request-Id"] = f"hot-{len(answers)}"
            r = client.post(path, **kw)
            assert r.headers.get("Request-Id") == f"hot-{len(answers)}", r.headers
            answers.append(_answer(r))
            return r

        post(anon, "/v1/payments", json=payment_body())  # 401: no key
        post(wrong, "/v1/payments", json=payment_body())  # 401: unknown key
        post(c, "/v1/payments", content=b"{not json")  # 400
        post(c, "/v1/payments", content=b"[1, 2]")  # 400: not an object
        post(c, "/v1/payments", json={**payment_body(), "amout": 5})  # 400 parameter_unknown
        post(c, "/v1/payments", json={"currency": "INR", "payment_method": {"type": "card"}})  # 400 missing
        post(c, "/v1/payments", json=payment_body(connector="nope"))  # 400 param connector
        post(c, "/v1/payments?x=%00", json=payment_body())  # 400 NUL
        pay = expect(post(c, "/v1/payments", json=payment_body(2500)), 201)
        post(c, "/v1/payments", json=payment_body(900), headers={"Idempotency-Key": "k-create"})  # 201
        post(c, "/v1/payments", json=payment_body(900), headers={"Idempotency-Key": "k-create"})  # replayed
        post(c, "/v1/payments", json=payment_body(901), headers={"Idempotency-Key": "k-create"})  # 422 reused
        post(c, "/v1/payments", json=payment_body(), headers={"Idempotency-Key": "k" * 256})  # 400 too long
        post(c, "/v1/payments", json=payment_body(method=CARD_DECLINED, confirm=True))  # 201 failed
        post(c, f"/v1/payments/{pay['id']}/capture", json={})  # 409: not authorized yet
        post(c, f"/v1/payments/{pay['id']}/confirm", json={"return_url": "ftp://x"})  # 400 param
        post(c, f"/v1/payments/{pay['id']}/confirm", headers={"Idempotency-Key": "k-confirm"})  # 200
        post(c, f"/v1/payments/{pay['id']}/confirm", headers={"Idempotency-Key": "k-confirm"})  # replayed
        post(c, f"/v1/payments/{pay['id']}/confirm")  # 409 already succeeded
        post(c, f"/v1/payments/{pay['id']}/cancel", json={"x": 1})  # 400 unknown param
        post(c, f"/v1/payments/{pay['id']}/cancel")  # 409
        post(c, "/v1/payments/pay_missing00000000/confirm")  # 404
        post(c, "/v1/payments/pay_missing00000000/refund")  # 404: no such route (Quart's)
        post(c, f"/v1/payments/{pay['id']}")  # 405 (Quart's)
        post(c, "/v1/refunds", json={"payment_id": pay["id"], "amount": 1000}, headers={"Idempotency-Key": "k-re"})
        post(c, "/v1/refunds", json={"payment_id": pay["id"], "amount": 1000}, headers={"Idempotency-Key": "k-re"})
        post(c, "/v1/refunds", json={"payment_id": pay["id"], "amount": 999999})  # 409 more than is left
        post(c, "/v1/refunds", json={"amount": 5})  # 400 missing payment_id
        post(c, "/v1/payments", content=(b"x" * (512 * 1024) for _ in range(3)))  # 413 (chunked, no length)
    return answers


def test_both_edges_answer_the_same(servers, api_key_of):
    asgi, quart = servers
    through_asgi = _scenario(asgi, api_key_of(asgi))
    through_quart = _scenario(quart, api_key_of(quart))
    assert [a[0] for a in through_asgi] == [401, 401, 400, 400, 400, 400, 400, 400, 201, 201, 201, 422, 400, 201,
                                           409, 400, 200, 200, 409, 400, 409, 404, 404, 405, 201, 201, 409, 400, 413]
    for n, (one, other) in enumerate(zip(through_asgi, through_quart, strict=True)):
        assert one == other, f"request {n}: ASGI {one} != Quart {other}"
    replayed = through_asgi[10]
    assert replayed[1]["idempotent-replayed"] == "true"


def test_the_endpoint_serves_them_and_quart_the_rest(servers, api_key_of):
    """The default server answers the hot POSTs without Quart (its before_request logs every
    request it handles at DEBUG), and counts them under Quart's route templates."""
    asgi, quart = servers
    with asgi.client(api_key_of(asgi)) as c:
        pay = expect(c.post("/v1/payments", json=payment_body()), 201)
        expect(c.post(f"/v1/payments/{pay['id']}/confirm"), 200)
        expect(c.get(f"/v1/payments/{pay['id']}"), 200)
        metrics = c.get("/metrics").text
    assert re.search(r'paycast_http_requests_total\{method="POST",route="/v1/payments/<payment_id>/confirm",'
                     r'status="200"\} [1-9]', metrics), metrics
    hot = re.compile(r"start POST /v1/(refunds|payments)(/[^/\s\"]+/(confirm|capture|cancel))?\b(?!/)")
    assert not any(hot.search(line) for line in asgi.stderr_lines)
    assert any(f"start GET /v1/payments/{pay['id']}" in line for line in asgi.stderr_lines)
    assert any(hot.search(line) for line in quart.stderr_lines)


def test_the_rate_limit_answers_the_same(servers, api_key_of):
    answers = []
    for server in servers:
        with server.client(api_key_of(server)) as c:
            for _ in range(BURST + 5):
                r = c.post("/v1/payments", json={}, headers={"X-Request-Id": "rate-limited"})
                if r.status_code == 429:
                    answers.append(_answer(r))
                    break
            else:
                pytest.fail(f"no 429 after {BURST + 5} requests")
    one, other = answers
    assert one == other
    assert int(one[1]["retry-after"]) >= 1
    assert one[2]["error"]["type"] == "rate_limit_error", one


@pytest.fixture
def api_key_of():
    """A new merchant on the given server (both servers share the database)."""
    return lambda server: server.create_merchant()
