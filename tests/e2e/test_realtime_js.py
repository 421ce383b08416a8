"""``clients/js/paycast-realtime.js``: its Node unit tests, the file Paycast serves, and the
whole client in a real headless Chromium against a real server that is killed with
``kill -9`` and restarted, cut off the network, and made to close with 1013.

The page is a merchant's page on its own origin (a local ``http.server``): it imports
the module from Paycast's ``/static/paycast-realtime.js`` and gets tokens from "its
backend" (a function the test exposes, which calls ``POST /v1/realtime/tokens``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import secrets

import httpx
import psutil
import pytest

from tests.e2e.test_dashboard import browser  # noqa: F401 - the module-scoped Chromium fixture
from tests.support import ROOT, expect, payment_body, skip_or_fail

CLIENT = "cus_js"
DEVICE = "browser-1"
TOKEN_TTL_S = 3


def test_node_unit_tests_of_the_module_pass():
    """``node --test clients/js/test/`` (backoff, ack batching, ordering); fails on any failure."""
    node = shutil.which("node")
    if node is None:
        skip_or_fail("node is not installed (the JS client's unit tests need Node 20+)")
    done = subprocess.run([node, "--test", "clients/js/test/"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout, done.stdout[-2000:]
    assert "# pass 0" not in done.stdout, done.stdout[-2000:]


def test_paycast_serves_the_module_and_its_types_to_any_origin(server):
    with server.client() as c:
        js = c.get("/static/paycast-realtime.js")
        types = c.get("/static/paycast-realtime.d.ts")
    expect(js, 200)
    assert js.headers["content-type"].startswith("text/javascript")
    assert js.headers["access-control-allow-origin"] == "*"
    assert js.content == (ROOT / "clients/js/paycast-realtime.js").read_bytes()
    expect(types, 200)
    assert b"export class PaycastRealtime" in types.content


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ShopPage:
    """The merchant's page, served from its own origin (another port) by a threaded ``http.server``."""

    def __init__(self, paycast_url: str) -> None:
        html = _PAGE.replace("PAYCAST", paycast_url).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(html)))
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# What a developer writes (README "Live payment updates in a web page"), plus a log the test reads.
_PAGE = """<!doctype html><meta charset="utf-8"><title>shop</title>
<script type="module">
import { PaycastRealtime } from "PAYCAST/static/paycast-realtime.js";
const log = window.log = { seqs: [], succeeded: [], states: [], reconnects: [], errors: [],
                           welcomes: 0, revoked: null };
const rt = window.rt = new PaycastRealtime({
  getToken: ({ deviceId }) => window.shopBackendToken(deviceId),
  deviceId: "browser-1", backoff: { baseMs: 100, maxMs: 1000 }, idleTimeoutMs: 4000, ackCount: 5, ackDelayMs: 200,
});
rt.on("event", (d) => log.seqs.push(d.seq));
rt.onPaymentSucceeded((payment) => log.succeeded.push(payment.id));
rt.on("state", (s) => log.states.push(s));
rt.on("reconnect", (r) => log.reconnects.push(r.code));
rt.on("welcome", () => { log.welcomes += 1; });
rt.on("revoked", (r) => { log.revoked = r.deviceId; });
rt.on("error", (e) => log.errors.push(e.code));
rt.start();
</script>
"""


@contextlib.contextmanager
def _network_service_stopped():
    """SIGSTOP Chromium's network service processes (children of this test process) inside the block."""
    mine = [p for p in psutil.Process().children(recursive=True)
            if any("network.mojom.NetworkService" in arg for arg in _cmdline(p))]
    assert mine, "no Chromium network service process found"
    for p in mine:
        p.suspend()
    try:
        yield
    finally:
        for p in mine:
            p.resume()


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _succeeded_payments(api: httpx.Client) -> set[str]:
    """Ids of the customer's succeeded payments (every page)."""
    ids: list[str] = []
    while True:
        params = {"customer_id": CLIENT, "status": "succeeded", "limit": 100}
        if ids:
            params["starting_after"] = ids[-1]
        page = api.get("/v1/payments", params=params).json()
        ids += [p["id"] for p in page["data"]]
        if not page["has_more"]:
            return set(ids)


def _log(page) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.log))")


def _slow_closes(client: httpx.Client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("paycast_realtime_slow_consumer_closes_total "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.timeout(120)
def test_a_page_using_the_module_gets_every_event_once_through_kill9_offline_1013_expiry_and_stops_when_revoked(
        browser, new_database, start_server):  # noqa: F811 - browser is the imported fixture
    port = _free_port()
    env = {"PAYCAST_PORT": str(port), "PAYCAST_REALTIME_PING_S": "1", "PAYCAST_REALTIME_QUEUE_SIZE": "4",
           "PAYCAST_REALTIME_SLOW_CONSUMER_S": "0.3", "PAYCAST_REALTIME_LISTENER_CHECK_S": "0.5"}
    # Sync Playwright keeps an asyncio loop running in this thread; the factory runs its own.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        dsn = pool.submit(new_database, "paycast_js").result()
    server = start_server(dsn, **env)
    api_key = server.create_merchant("shop")
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10)
    minted: list[float] = []

    def shop_backend_token(device_id: str) -> dict:
        """The shop's backend: a short-lived token for this customer's device (the whole body)."""
        r = api.post("/v1/realtime/tokens", json={"client_id": CLIENT, "device_id": device_id, "ttl_s": TOKEN_TTL_S})
        r.raise_for_status()
        minted.append(time.monotonic())
        return r.json()

    def pay(n: int) -> None:
        for _ in range(n):
            r = api.post("/v1/payments", json=payment_body(500, confirm=True, customer_id=CLIENT))
            expect(r, 201)

    shop = ShopPage(server.url)
    context = browser.new_context()
    try:
        context.expose_function("shopBackendToken", shop_backend_token)
        page = context.new_page()
        page.goto(shop.url)
        page.wait_for_function("window.log && window.log.welcomes === 1", timeout=15_000)
        pay(3)
        page.wait_for_function("window.log.succeeded.length === 3", timeout=15_000)

        # kill -9 mid-stream: payments keep being made until the server dies; once the
        # first token has expired, the restarted server refuses it and the client asks again.
        stop = threading.Event()

        def stream() -> None:
            while not stop.is_set():
                try:
                    api.post("/v1/payments", json=payment_body(700, confirm=True, customer_id=CLIENT))
                    time.sleep(0.05)
                except httpx.HTTPError:
                    time.sleep(0.05)  # the server is down: keep trying, as a merchant would

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            streaming = pool.submit(stream)
            # Every token the page holds has expired before the server comes back.
            page.wait_for_timeout(max(300, (minted[-1] + TOKEN_TTL_S + 0.2 - time.monotonic()) * 1000))
            welcomes = _log(page)["welcomes"]
            server.kill9()
            killed_at = time.monotonic()
            page.wait_for_timeout(300)
            server = start_server(dsn, **env)
            page.wait_for_function(f"window.log.welcomes > {welcomes}", timeout=20_000)
            page.wait_for_timeout(500)
            stop.set()
            streaming.result(timeout=15)
        # The server refuses expired tokens: the page got back in with one asked for after the kill.
        assert any(t > killed_at for t in minted), minted

        # The network is cut and restored while payments are made.
        welcomes = _log(page)["welcomes"]
        context.set_offline(True)
        pay(3)
        page.wait_for_timeout(5000)  # past idleTimeoutMs: the cut socket hears no ping and is replaced
        context.set_offline(False)
        pay(2)
        page.wait_for_function(f"window.log.welcomes > {welcomes} && window.rt.state === 'open'", timeout=15_000)

        # 1013: the browser stops reading (its network service process is stopped with SIGSTOP,
        # for less than idleTimeoutMs) while big messages are published; once the socket buffers
        # are full the server's queue for the page stays full, it is closed as a slow consumer,
        # and the page resumes with after_seq.
        big = secrets.token_urlsafe(600_000)  # incompressible: the socket uses permessage-deflate
        before = _slow_closes(api)
        with _network_service_stopped():
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                for _ in range(15):
                    list(pool.map(lambda _: api.post("/v1/realtime/publish", json={
                        "client_id": CLIENT, "event": {"type": "shop.big", "data": big}}), range(4)))
                    if _slow_closes(api) > before:
                        break
        assert _slow_closes(api) > before, "the stalled page was not closed as a slow consumer"
        page.wait_for_function("window.log.reconnects.includes(1013) && window.rt.state === 'open'", timeout=20_000)

        # Every event of the customer, once, in order: the last seq is the marker's.
        last = api.post("/v1/realtime/publish", json={"client_id": CLIENT, "event": {"type": "shop.marker"}}).json()
        page.wait_for_function(f"window.log.seqs.at(-1) === {last['seq']}", timeout=20_000)
        log = _log(page)
        assert log["seqs"] == list(range(1, last["seq"] + 1)), "gap or duplicate"
        succeeded = _succeeded_payments(api)
        assert len(log["succeeded"]) == len(set(log["succeeded"]))
        assert set(log["succeeded"]) == succeeded
        assert len(succeeded) > 8

        # Revoked: the open connection is closed with 4001; the client stops and says so.
        r = api.delete(f"/v1/realtime/clients/{CLIENT}/devices/{DEVICE}")
        expect(r, 200)
        page.wait_for_function("window.log.revoked === 'browser-1'", timeout=10_000)
        tokens_then, log_then = len(minted), _log(page)
        page.wait_for_timeout(2000)
        log_now = _log(page)
        assert page.evaluate("window.rt.state") == "revoked"
        assert len(minted) == tokens_then
        assert log_now["welcomes"] == log_then["welcomes"]
        assert log_now["states"][-1] == "revoked"
        assert "connecting" not in log_now["states"][len(log_then["states"]):]
    finally:
        context.close()
        shop.close()
        api.close()
