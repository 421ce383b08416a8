"""The surfaces served at the ASGI level in front of Quart (app/server.py ``asgi_edge``):
``POST /webhooks/{connector}`` (app/webhooks_endpoint.py) keeps the request contract of
every other route; ``/v1/realtime`` (app/realtime_endpoint.py) answers plain HTTP with a 400."""

from __future__ import annotations

import json
import re
import time

from tests.support import expect, sign_stripe


def _event(event_id: str) -> bytes:
    return json.dumps({"id": event_id, "type": "payment_intent.succeeded", "created": int(time.time()),
                       "data": {"object": {"id": "pi_edge", "amount": 100, "currency": "inr",
                                           "status": "succeeded", "metadata": {}}}}).encode()


def _requests(client, status: str) -> float:
    pattern = rf'^paycast_http_requests_total{{[^}}]*route="/webhooks/<connector>"[^}}]*status="{status}"[^}}]*}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, client.get("/metrics").text, re.M))


def test_request_id_json_errors_and_metrics(server, client):
    before_ok, before_bad = _requests(client, "200"), _requests(client, "400")
    with server.client() as anon:
        body = _event(f"evt_edge_{time.time_ns()}")
        r = anon.post("/webhooks/mockstripe", content=body,
                      headers={**sign_stripe(body), "X-Request-Id": "edge-42"})
        expect(r, 200)
        assert r.json() == {"received": True, "duplicate": False}, r.text
        assert r.headers["Request-Id"] == "edge-42"
        assert r.headers["Content-Type"] == "application/json"
        again = anon.post("/webhooks/mockstripe", content=body, headers=sign_stripe(body))
        assert again.json() == {"received": True, "duplicate": True}
        assert again.headers["Request-Id"].startswith("req_")
        forged = anon.post("/webhooks/mockstripe", content=body, headers=sign_stripe(body, secret="whsec_wrong"))
        expect(forged, 400)
        assert forged.json()["error"]["type"] == "invalid_request_error"
        unknown = anon.post("/webhooks/nope", content=body, headers=sign_stripe(body))
        expect(unknown, 404)
        assert unknown.json()["error"]["param"] == "connector"
    assert _requests(client, "200") >= before_ok + 2
    assert _requests(client, "400") >= before_bad + 1


def test_other_methods_and_paths_are_quarts_answers(server):
    with server.client() as anon:
        r = anon.get("/webhooks/mockstripe")
        expect(r, 405)
        assert r.json()["error"]["code"] == "method_not_allowed"
        expect(anon.post("/webhooks/mockstripe/extra", content=b"{}"), 404)


def test_a_chunked_body_over_the_limit_is_413_and_the_server_keeps_serving(server, client):
    def chunks():
        for _ in range(3):
            yield b"x" * (512 * 1024)  # 1.5 MiB, no Content-Length: only the read can tell

    with server.client() as anon:
        r = anon.post("/webhooks/mockstripe", content=chunks())
        expect(r, 413)
        assert r.json()["error"]["type"] == "invalid_request_error", r.text
    expect(client.get("/healthz"), 200)


def test_nul_in_the_url_is_a_400(server):
    with server.client() as anon:
        r = anon.post("/webhooks/mockstripe?x=%00", content=b"{}")
        expect(r, 400)
        assert "NUL" in r.json()["error"]["message"]


def test_a_plain_http_request_to_the_websocket_url_is_a_400(server):
    with server.client() as anon:
        r = anon.get("/v1/realtime", params={"token": "x"})
        expect(r, 400)
        assert r.json()["error"]["type"] == "invalid_request_error", r.text
