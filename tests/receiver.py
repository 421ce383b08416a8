"""A real local HTTP endpoint for outgoing-webhook tests: a threaded
``http.server`` on a free loopback port that records every request and
answers from a script of status codes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """Records POSTs; answers ``script`` status codes in order, then ``default``.

    Args:
      script: status codes for the first requests.
      default: status code once the script is used up.
      delay_s: how long each answer takes (a slow endpoint).
      gate: when given, every answer waits until it is set (an endpoint that
        hangs until the test lets it go; bounded by 30 s so nothing leaks).
    """

    def __init__(self, script: list[int] | None = None, default: int = 200, delay_s: float = 0.0,
                 gate: threading.Event | None = None) -> None:
        self.script = list(script or [])
        self.default = default
        self.delay_s = delay_s
        self.gate = gate
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                    status = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body,
                                                      time.time()))
                try:
                    if receiver.gate is not None:
                        receiver.gate.wait(30)
                    if receiver.delay_s:
                        time.sleep(receiver.delay_s)
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/hooks"

    def __enter__(self) -> "Receiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.gate is not None:
            self.gate.set()  # never leave a handler thread hanging
        self._server.shutdown()
        self._server.server_close()

    def ids(self) -> list[str]:
        with self._lock:
            return [r.headers.get("webhook-id", "") for r in self.received]
