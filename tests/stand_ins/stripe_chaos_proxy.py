"""A fault-injecting HTTP proxy in front of localstripe, for the Stripe chaos test.

It plays what localstripe lacks and what the network does to Stripe calls:

- **Stripe's idempotency layer** (docs.stripe.com/api/idempotent_requests):
  a ``POST`` with an ``Idempotency-Key`` that was answered before gets the same
  status and body again (header ``Idempotent-Replayed: true``), without reaching
  localstripe; the same key while its first request is still running is 409
  ``idempotency_key_in_use``. Keys are per API key.
- **Faults** on chosen ``POST`` requests (seeded by the test): ``"refuse"``
  answers 500 without forwarding (nothing processed, nothing stored under the key);
  ``"lose"`` forwards, stores the answer under the key, then holds the connection
  past the client's timeout (processed, answer lost).
- **Lost webhooks**: localstripe's deliveries are registered at
  ``{proxy}/_hook?to=<url>``; the proxy relays them to ``to`` unless
  :attr:`lose_webhook` says otherwise (localstripe is always answered 200).

Counts of what reached localstripe are kept in :attr:`forwarded`.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import httpx

_HOP = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding"}


class ChaosProxy:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager).

    Attributes:
      fault: ``fault(method, path) -> None | "refuse" | "lose"``, asked for every ``POST /v1/…``.
      lose_webhook: ``lose_webhook(body) -> bool``, asked for every webhook delivery.
      hold_s: how long a ``"lose"`` holds the connection (longer than the client's timeout).
    """

    def __init__(self, upstream: str, *, hold_s: float = 3.0) -> None:
        self.upstream = upstream
        self.hold_s = hold_s
        self.fault: Callable[[str, str], str | None] = lambda method, path: None
        self.lose_webhook: Callable[[bytes], bool] = lambda body: False
        self.forwarded: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[str] = Counter()
        self.webhooks: Counter[str] = Counter()
        self._answers: dict[tuple[str, str], tuple[int, bytes]] = {}
        self._running: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def hook_url(self, target: str) -> str:
        """The address to register at localstripe for deliveries meant for ``target``."""
        return f"{self.url}/_hook?to={quote(target, safe='')}"

    def __enter__(self) -> "ChaosProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "ChaosProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                proxy._api(self, b"")

            def do_DELETE(self) -> None:
                proxy._api(self, self._body())

            def do_POST(self) -> None:
                body = self._body()
                if self.path.startswith("/_hook"):
                    proxy._relay(self, body)
                else:
                    proxy._api(self, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="stripe-chaos-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- the API ------------------------------------------------------------------

    def _api(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        method, path = handler.command, handler.path
        key = handler.headers.get("Idempotency-Key")
        slot = (handler.headers.get("Authorization", ""), key) if key and method == "POST" else None
        if slot is not None:
            with self._lock:
                if slot in self._answers:
                    status, payload = self._answers[slot]
                    return self._send(handler, status, payload, replayed=True)
                if slot in self._running:
                    return self._send(handler, 409, b'{"error": {"type": "invalid_request_error", '
                                                    b'"code": "idempotency_key_in_use", "message": "There is '
                                                    b'currently another in-progress request using this key."}}')
                self._running.add(slot)
        try:
            fault = self.fault(method, urlsplit(path).path) if method == "POST" else None
            if fault == "refuse":
                self.faults["refuse"] += 1
                return self._send(handler, 500, b'{"error": {"type": "api_error", "message": "injected"}}')
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP}
            answer = httpx.request(method, self.upstream + path, content=body or None, headers=headers, timeout=10)
            self.forwarded[(method, urlsplit(path).path)] += 1
            if slot is not None:
                with self._lock:
                    self._answers[slot] = (answer.status_code, answer.content)
            if fault == "lose":
                self.faults["lose"] += 1
                time.sleep(self.hold_s)  # the client has given up by now
                handler.close_connection = True
                return
            self._send(handler, answer.status_code, answer.content)
        finally:
            if slot is not None:
                with self._lock:
                    self._running.discard(slot)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes, replayed: bool = False) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        if replayed:
            handler.send_header("Idempotent-Replayed", "true")
        handler.end_headers()
        handler.wfile.write(payload)

    # -- webhooks -----------------------------------------------------------------

    def _relay(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        target = parse_qs(urlsplit(handler.path).query).get("to", [""])[0]
        if self.lose_webhook(body):
            self.webhooks["lost"] += 1
        else:
            headers = {k: v for k, v in handler.headers.items() if k.lower() in ("stripe-signature", "content-type")}
            try:
                httpx.post(target, content=body, headers=headers, timeout=10)
                self.webhooks["relayed"] += 1
            except httpx.HTTPError:
                self.webhooks["failed"] += 1
        self._send(handler, 200, b"{}")
