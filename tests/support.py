"""Test support: a real Paycast server process on a free port, and HTTP helpers."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

ROOT = pathlib.Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "adm_test_token"
# The key ring of secrets at rest for every server the tests start (an external
# database without PAYCAST_SECRETS_KEY refuses to start). Put in the environment,
# so processes started any other way (run.py check, bench helpers) have it too;
# a test of the refusal removes it.
TEST_SECRETS_KEY = "cGF5Y2FzdC10ZXN0LXNlY3JldHMta2V5LTMyYnl0ZXM="
os.environ.setdefault("PAYCAST_SECRETS_KEY", TEST_SECRETS_KEY)


class ServerProcess:
    """``python run.py serve`` against a given database, on a free port.

    Args:
      dsn: the database (``PAYCAST_DATABASE_URL``).
      env: extra ``PAYCAST_*`` settings.
      keep_stdout: keep what the server prints after its ``listening`` line in
        :attr:`stdout_lines` (e.g. the console span exporter's output).
    """

    def __init__(self, dsn: str, *, keep_stdout: bool = False, **env: str) -> None:
        self.dsn = dsn
        self.extra_env = env
        self.keep_stdout = keep_stdout
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []

    def start(self, timeout: float = 30) -> "ServerProcess":
        """Spawn the server and wait (bounded) for its ``listening`` line.

        stdout and stderr are read by daemon threads; the wait here is on a
        queue with a deadline, so a server that hangs silently fails the test
        after ``timeout`` seconds instead of blocking ``readline`` forever.

        Raises:
          RuntimeError: the server exited or did not listen in time (it is killed).
        """
        env = dict(os.environ)
        env.update({"PAYCAST_DATABASE_URL": self.dsn, "PAYCAST_PORT": "0", "PAYCAST_ADMIN_TOKEN": ADMIN_TOKEN,
                    "PAYCAST_LOG_LEVEL": "WARNING"})
        env.update(self.extra_env)
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "serve"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        threading.Thread(target=self._drain_stdout, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self.proc.wait(5)
                raise RuntimeError(f"server exited early ({self.proc.returncode}): "
                                   f"{''.join(self.stderr_lines[-20:])}")
            if line.startswith("{") and '"listening"' in line:
                self.url = json.loads(line)["url"]
                return self
        self.stop(timeout=5)
        raise RuntimeError(f"server did not start within {timeout}s: {''.join(self.stderr_lines[-20:])}")

    def _drain_stdout(self, lines: "queue.Queue[str | None]") -> None:
        assert self.proc
        assert self.proc.stdout
        for line in self.proc.stdout:
            if self.url is None:
                lines.put(line)
            elif self.keep_stdout:
                self.stdout_lines.append(line)
        lines.put(None)

    def _drain_stderr(self) -> None:
        assert self.proc
        assert self.proc.stderr
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def __enter__(self) -> "ServerProcess":
        """``with ServerProcess(...).start() as proc:``: stopped when the block ends, however it ends."""
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait_exit(self, timeout: float) -> int:
        """Wait (bounded) for the process to exit by itself; its return code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def terminate(self) -> None:
        """Ask the process to drain and exit (SIGTERM) without waiting; :meth:`stop` waits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def client(self, api_key: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        kw.setdefault("timeout", 30)
        return httpx.Client(base_url=self.url, headers=headers, **kw)

    def create_merchant(self, name: str = "test merchant") -> str:
        with self.client(ADMIN_TOKEN) as c:
            return expect(c.post("/admin/merchants", json={"name": name}), 201)["api_key"]


def expect(resp: httpx.Response, status: int, note: object = None) -> Any:
    """Assert that ``resp`` answered ``status``; return its JSON body (None when it has none).

    A failure names the request and shows what came back, e.g.
    ``POST http://127.0.0.1:41234/v1/payments → 500, expected 201: {"error": ...}``,
    instead of pytest's bare ``assert 500 == 201``.

    Args:
      resp: an httpx response, or anything else with a ``status_code`` and a body
        (a refused WebSocket handshake, a generated SDK's response): then None is returned.
      note: what else the failure should show (the case being tried, a body sent).
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this helper's
    if resp.status_code != status:
        raise AssertionError(f"{_request_of(resp)} → {resp.status_code}, expected {status}"
                             + ("" if note is None else f" ({note!r})") + f": {_body_of(resp)}")
    if not isinstance(resp, httpx.Response) or "json" not in resp.headers.get("content-type", ""):
        return None
    return resp.json()


def _request_of(resp: Any) -> str:
    try:
        return f"{resp.request.method} {resp.request.url}"
    except (AttributeError, RuntimeError):  # no request kept (built by hand, not httpx)
        return type(resp).__name__


def _body_of(resp: Any, limit: int = 2000) -> str:
    body = getattr(resp, "text", None)
    if not isinstance(body, str):
        raw = getattr(resp, "content", None) or getattr(resp, "body", None) or b""
        body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if len(body) > limit:
        body = body[:limit] + f"… ({len(body)} characters)"
    return body or "(empty body)"


CARD_OK = {"type": "card", "card": {"number": "4242424242424242"}}
CARD_DECLINED = {"type": "card", "card": {"number": "4000000000000002"}}
CARD_NO_FUNDS = {"type": "card", "card": {"number": "4000000000009995"}}


def payment_body(amount: int = 1000, currency: str = "INR", method: dict | None = None, **extra) -> dict:
    return {"amount": amount, "currency": currency, "payment_method": method or CARD_OK, **extra}


def db_fetch(dsn: str, sql: str, *args) -> list[dict]:
    """Run one query directly against the database (to check invariants behind the API)."""
    import asyncio

    import asyncpg

    async def main() -> list[dict]:
        conn = await asyncpg.connect(dsn)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(main())


def store_connector_account(dsn: str, merchant_id: str, *, key: str = TEST_SECRETS_KEY, mca_id: str | None = None,
                            credentials: dict | None = None, webhook_secret: str = "whsec_stored") -> str:
    """A Stripe connector account row of ``merchant_id``, sealed with ``key`` as a server with
    that key ring stores one, written straight into the database (for tests that need an
    account where no Stripe stand-in is there to try credentials against).

    Returns:
      Its id.
    """
    from domain.ids import new_id
    from storage.secrets_box import SecretsBox, context_of, parse_keys

    box, mca_id = SecretsBox(parse_keys(key)), mca_id or new_id("mca")
    db_fetch(dsn, "INSERT INTO connector_accounts (id, merchant_id, connector, status, livemode, credentials_sealed,"
                  " webhook_secret_sealed, credentials_mask) VALUES ($1, $2, 'stripe', 'active', false, $3, $4, $5)",
             mca_id, merchant_id,
             box.seal_json(credentials or {"secret_key": "sk_test_stored"},
                           context_of("connector_accounts", "credentials_sealed", mca_id)),
             box.seal(webhook_secret, context_of("connector_accounts", "webhook_secret_sealed", mca_id)),
             json.dumps({"secret_key": "sk_test_…"}))
    return mca_id


def wait_for(predicate, timeout: float = 15, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; return it (or fail)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


UPI = lambda vpa: {"type": "upi", "upi": {"vpa": vpa}}  # noqa: E731


def sign_stripe(body: bytes, secret: str = "whsec_dev_mockstripe", timestamp: int | None = None) -> dict:
    from domain.signatures import stripe_header

    return {"Stripe-Signature": stripe_header(secret, body, int(time.time()) if timestamp is None else timestamp),
            "Content-Type": "application/json"}


def sign_razorpay(body: bytes, secret: str = "dev_mockrazorpay") -> dict:
    from domain.signatures import razorpay_header

    return {"X-Razorpay-Signature": razorpay_header(secret, body), "Content-Type": "application/json"}


# The rollups are folded from the event log; a test that rewrites payments or attempts
# by hand (back-dating them, renaming a connector) changes what they count behind the log.
ROLLUPS_CHECK = "console rollups disagree with the event log they count"


def run_check(dsn: str, skip: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python run.py check`` against ``dsn`` (exit 0 when every invariant holds but ``skip``)."""
    env = dict(os.environ, PAYCAST_DATABASE_URL=dsn, PAYCAST_LOG_LEVEL="WARNING")
    args = [arg for name in skip for arg in ("--skip", name)]
    return subprocess.run([sys.executable, str(ROOT / "run.py"), "check", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def skip_or_fail(reason: str) -> None:
    """Skip on a developer machine; fail in CI, where a skipped real part would hide a gap.

    CI is recognised by ``CI`` (set by most CI systems) or ``PAYCAST_REQUIRE_CHROMIUM``
    (set by ``.ci/run``).
    """
    import pytest

    if os.environ.get("CI") or os.environ.get("PAYCAST_REQUIRE_CHROMIUM"):
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def stop_all(servers: "list[ServerProcess]", timeout: float = 15) -> None:
    """Stop several servers at once: all are told first, then each is waited for (bounded)."""
    for server in servers:
        server.terminate()
    for server in servers:
        server.stop(timeout)
