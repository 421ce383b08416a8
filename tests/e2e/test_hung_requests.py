"""Requests that hang for good.

1. The keep-alive regression: an answer given before the request body was read
   (a 405 from the request head) left hypercorn's connection parked, and the
   *next* request on it was never answered (app/keepalive.py). Driven here on
   ONE raw keep-alive connection the way requests/urllib3 write a request (the
   head, then the body in a second write), every answer within a second.
2. The per-request deadline (app/deadline.py): a request the server stops
   answering gets 503 ``unavailable`` with its request id and the connection is
   closed; a WebSocket and a slow upload are not cut.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time

import asyncpg
import pytest
import trio

from tests.realtime_support import connect, events, http, publish, token, welcome
from tests.support import ADMIN_TOKEN, expect

ANSWER_WITHIN_S = 1.0
# Between the head and the body: long enough that the server has answered the head
# before the body arrives (what made the old code lose the connection).
HEAD_BODY_GAP_S = 0.03


class RawConnection:
    """One HTTP/1.1 keep-alive connection on a plain socket (Nagle off, as urllib3 and httpx set it)."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send_head(self, method: str, path: str, headers: dict[str, str], body_length: int | None = None) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: paycast", *(f"{k}: {v}" for k, v in headers.items())]
        if body_length is not None:
            lines.append(f"Content-Length: {body_length}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self, within: float) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers (lower-case names), body.

        Raises:
          AssertionError: no complete response within ``within`` seconds (or the connection closed first).
        """
        deadline = time.monotonic() + within
        try:
            while b"\r\n\r\n" not in self.buffer:
                assert self._fill(deadline), "connection closed before a response"
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
            length = int(headers.get("content-length", "0"))
            while len(self.buffer) < length:
                assert self._fill(deadline), "connection closed mid-response"
        except TimeoutError:
            raise AssertionError(f"no response within {within} s") from None
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def closed_by_server(self, within: float) -> bool:
        """True if the server closes the connection (EOF) within ``within`` seconds."""
        try:
            return not self._fill(time.monotonic() + within)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


# Answers given from the request head while its body is still on the wire: methods the
# route does not allow (with the headers schemathesis sent), a body on a bodiless route.
EARLY_ANSWERS = [
    ("QUERY", "/v1/realtime/tokens", True, 405),
    ("QUERY", "/v1/payments/pay_0/confirm", True, 405),
    ("DELETE", "/v1/accounts", True, 405),
    ("PUT", "/v1/refunds", True, 405),
    ("QUERY", "/webhooks/mockstripe", False, 405),
    ("GET", "/admin/merchants", False, 405),
    ("GET", "/v1/realtime", False, 400),
]


def test_early_answers_keep_the_keep_alive_connection_answering(server, api_key):
    body = json.dumps({"client_id": "0", "amount": 1, "currency": "INR", "device_id": None}).encode()
    conn = RawConnection(server.url)
    started = time.monotonic()
    try:
        for round_ in range(6):
            for n, (method, path, idempotent, status) in enumerate(EARLY_ANSWERS):
                headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
                if idempotent:
                    headers["Idempotency-Key"] = f"early-{round_}-{n}"
                conn.send_head(method, path, headers, len(body))
                time.sleep(HEAD_BODY_GAP_S)
                conn.send(body)
                got, answer_headers, _ = conn.response(ANSWER_WITHIN_S)
                assert got == status, (round_, method, path, got)
                assert "close" not in answer_headers.get("connection", ""), (method, path, answer_headers)
                # The request after it, on the same connection: this is the one that hung.
                conn.send_head("GET", "/healthz", {})
                assert conn.response(ANSWER_WITHIN_S)[0] == 200, (round_, method, path)
    finally:
        conn.close()
    print(f"{6 * len(EARLY_ANSWERS)} early answers, each followed by a request, in {time.monotonic() - started:.2f} s")


def test_an_early_answer_to_a_withheld_body_closes_the_connection(server, api_key):
    """A client that waits for the answer before sending its body (without ``Expect: 100-continue``)
    gets it after the drain timeout with ``Connection: close``, and the connection is closed, not held."""
    conn = RawConnection(server.url)
    try:
        conn.send_head("QUERY", "/v1/refunds", {"Authorization": f"Bearer {api_key}"}, 100)
        status, headers, _ = conn.response(within=5)
        assert status == 405, headers
        assert headers.get("connection") == "close", headers
        assert conn.closed_by_server(within=5)
    finally:
        conn.close()


# --- the per-request deadline -------------------------------------------------------------


class TableLock:
    """Holds ``LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE`` in a thread until released:
    every request that reads the table waits on PostgreSQL, as a request the server stops answering."""

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn, self.table = dsn, table
        self.locked, self.release = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
                self.locked.set()
                while not self.release.is_set():
                    await asyncio.sleep(0.05)
        finally:
            await conn.close()

    def __enter__(self) -> "TableLock":
        self.thread.start()
        assert self.locked.wait(10), "could not lock the table"
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.thread.join(10)


def _deadline_exceeded(server, outcome: str) -> float:
    text = server.client(ADMIN_TOKEN).get("/metrics").text
    pattern = rf'^paycast_http_deadline_exceeded_total{{[^}}]*outcome="{outcome}"[^}}]*}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


@pytest.fixture
def deadline_server(new_database, start_server):
    """A server whose requests may take 1 s of server time, and whose statements may wait far longer."""
    return start_server(new_database(), PAYCAST_REQUEST_DEADLINE_S="1", PAYCAST_DB_STATEMENT_TIMEOUT_MS="60000",
                        PAYCAST_LOG_LEVEL="WARNING")


@pytest.mark.timeout(90)
def test_a_request_the_server_stops_answering_gets_503_and_its_connection_is_closed(deadline_server):
    api_key = deadline_server.create_merchant("deadline")
    before = _deadline_exceeded(deadline_server, "answered_503")
    conn = RawConnection(deadline_server.url)
    try:
        with TableLock(deadline_server.dsn, "payments"):
            started = time.monotonic()
            conn.send_head("GET", "/v1/payments", {"Authorization": f"Bearer {api_key}", "X-Request-Id": "hung-27"})
            status, headers, body = conn.response(within=5)
            took = time.monotonic() - started
            assert status == 503, body
            error = json.loads(body)["error"]
            assert error["type"] == "api_error", error
            assert error["code"] == "unavailable", error
            assert headers["request-id"] == "hung-27"
            assert headers["connection"] == "close"
            assert 0.9 <= took < 3, took
            assert conn.closed_by_server(within=2)
    finally:
        conn.close()
    assert _deadline_exceeded(deadline_server, "answered_503") == before + 1
    logged = [json.loads(line) for line in deadline_server.stderr_lines if "deadline" in line and line.startswith("{")]
    assert any(entry.get("request_id") == "hung-27" and "GET /v1/payments" in entry["msg"] for entry in logged), logged
    # Once the lock is gone the server answers that route again, on a new connection.
    with deadline_server.client(api_key) as c:
        expect(c.get("/v1/payments"), 200)


@pytest.mark.timeout(90)
async def test_the_deadline_spares_websockets_and_slow_uploads(deadline_server):
    api_key = deadline_server.create_merchant("deadline spared")
    async with http(deadline_server, api_key) as api:
        tok = await token(api, "cus_spared")
        async with connect(deadline_server, tok) as ws:
            await welcome(ws)
            await trio.sleep(2.5)  # past the 1 s deadline: the WebSocket still delivers
            await publish(api, "cus_spared", {"still": "open"})
            assert (await events(ws, 1))[0]["event"]["data"] == {"still": "open"}

    # A body that takes 2.5 s to arrive: waiting for the client is not server time.
    body = json.dumps({"amount": 2500, "currency": "INR", "customer_id": "cus_slow"}).encode()
    conn = RawConnection(deadline_server.url)
    try:
        conn.send_head("POST", "/v1/orders", {"Authorization": f"Bearer {api_key}",
                                              "Content-Type": "application/json"}, len(body))
        for i in range(0, len(body), len(body) // 5 + 1):
            await trio.sleep(0.5)
            conn.send(body[i:i + len(body) // 5 + 1])
        status, _, answer = conn.response(within=5)
        assert status == 201, answer
    finally:
        conn.close()
    assert _deadline_exceeded(deadline_server, "answered_503") == 0
