"""The webhook dispatcher: delivers committed events to merchants' endpoints.

It claims due delivery rows (``FOR UPDATE SKIP LOCKED`` with a lease, so
several processes share them), sends each as a signed POST, and records the
attempt: 2xx within 15 s succeeds, 410 disables the endpoint, anything else
is retried on ``PAYCAST_WEBHOOK_RETRY_SCHEDULE``. Sends run in the
dispatcher's own nursery with a global bound and a bound per endpoint, so a
slow or dead endpoint holds at most its own few slots and never anything a
payment waits for. Each send is a task ``actor:webhook-delivery:<wd_id>``.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Callable

import httpx
import trio

from actors import delivery_observer as observe
from domain import outgoing_webhooks as rules
from domain.errors import Unavailable
from storage import webhook_deliveries

log = logging.getLogger("paycast.webhooks.out")
# Sends in flight in this process, and per endpoint (API: bounded per endpoint).
MAX_IN_FLIGHT = 32
PER_ENDPOINT = 4
# How often to look for due deliveries without being woken (other processes'
# events, retries coming due).
POLL_S = 0.25


class WebhookDispatcher:
    """Claims and sends outgoing webhook deliveries.

    Args:
      db: the open :class:`storage.database.Database`.
      allow_private_urls: ``PAYCAST_WEBHOOK_ALLOW_PRIVATE_URLS``; when False a
        URL that resolves to a private address is not contacted.
      resolve: async ``host -> [addresses]`` (to check private addresses at send time).
      open_secret: ``(endpoint_id, stored) -> secret``: the signing secret from its
        sealed stored form (storage.secrets_box), opened just before signing.
    """

    def __init__(self, db, *, allow_private_urls: bool, resolve, retry_schedule: list[int],
                 open_secret: Callable[[str, str], str]) -> None:
        self._db = db
        self._open_secret = open_secret
        self._schedule = list(retry_schedule)
        self._allow_private = allow_private_urls
        self._resolve = resolve
        self._wake = trio.Event()
        self._in_flight: dict[str, int] = {}  # endpoint id -> sends running or waiting
        self._total = 0
        self._slots = trio.CapacityLimiter(MAX_IN_FLIGHT)
        self._per_endpoint: dict[str, trio.Semaphore] = {}
        self.sent = 0
        self.succeeded = 0

    def wake(self) -> None:
        """Look for due deliveries now (e.g. after a manual retry)."""
        self._wake.set()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
        async with httpx.AsyncClient(timeout=rules.TIMEOUT_S, limits=limits, follow_redirects=False) as client, \
                trio.open_nursery() as nursery:
            while True:
                claimed = 0
                room = MAX_IN_FLIGHT - self._total
                if room > 0:
                    busy = [e for e, n in self._in_flight.items() if n >= PER_ENDPOINT]
                    try:
                        rows = await self._db.transaction(webhook_deliveries.claim, room, PER_ENDPOINT, busy)
                    except Unavailable:
                        rows = []
                    for row in rows:
                        self._start(nursery, client, row)
                    claimed = len(rows)
                if claimed == 0 or self._total >= MAX_IN_FLIGHT:
                    with trio.move_on_after(POLL_S):
                        await self._wake.wait()
                    self._wake = trio.Event()

    def _start(self, nursery: trio.Nursery, client: httpx.AsyncClient, row: dict) -> None:
        endpoint = row["endpoint_id"]
        self._in_flight[endpoint] = self._in_flight.get(endpoint, 0) + 1
        self._total += 1
        semaphore = self._per_endpoint.setdefault(endpoint, trio.Semaphore(PER_ENDPOINT))
        nursery.start_soon(self._deliver_traced, client, row, semaphore, name=f"actor:webhook-delivery:{row['id']}")

    async def _deliver_traced(self, client: httpx.AsyncClient, row: dict, semaphore: trio.Semaphore) -> None:
        with observe.send_span(row):
            await self._deliver(client, row, semaphore)

    async def _deliver(self, client: httpx.AsyncClient, row: dict, semaphore: trio.Semaphore) -> None:
        endpoint = row["endpoint_id"]
        try:
            async with self._slots, semaphore:
                status_code, latency_ms, error = await self._send(client, row)
            self.sent += 1
            try:
                outcome = await self._db.transaction(webhook_deliveries.record_attempt, row["id"], row["token"],
                                                     status_code, latency_ms, error, self._schedule)
            except Unavailable:
                # The lease runs out and the delivery is sent again: at least once.
                log.warning("could not record attempt of %s; it will be retried", row["id"])
                observe.attempt_recorded(row, None, status_code, latency_ms, error)
                return
            observe.attempt_recorded(row, outcome, status_code, latency_ms, error)
            if outcome == "succeeded":
                self.succeeded += 1
        finally:
            self._total -= 1
            self._in_flight[endpoint] -= 1
            if self._in_flight[endpoint] == 0:
                del self._in_flight[endpoint]
                self._per_endpoint.pop(endpoint, None)
            self._wake.set()  # room again: a busy endpoint may have more due

    async def _send(self, client: httpx.AsyncClient, row: dict) -> tuple[int | None, int, str | None]:
        """One attempt. Returns ``(status code or None, latency ms, error or None)``."""
        body = json.dumps(row["event"], separators=(",", ":")).encode()
        secret = self._open_secret(row["endpoint_id"], row["secret"])
        headers = rules.headers(secret, row["event"]["id"], int(time.time()), body) | observe.trace_headers()
        started = trio.current_time()

        def elapsed_ms() -> int:
            return int((trio.current_time() - started) * 1000)

        target = (row["url"], {}, {})
        if not self._allow_private:
            try:
                target = await self._pinned(row["url"])
            except _Refused as exc:
                return None, elapsed_ms(), f"refused: {exc}"
        url, extra_headers, extensions = target
        try:
            with trio.fail_after(rules.TIMEOUT_S):
                # Streamed so the endpoint's response body is never read.
                async with client.stream("POST", url, content=body, headers={**headers, **extra_headers},
                                         extensions=extensions) as response:
                    return response.status_code, elapsed_ms(), None
        except trio.TooSlowError:
            return None, elapsed_ms(), f"timeout after {rules.TIMEOUT_S:.0f}s"
        except httpx.HTTPError as exc:
            return None, elapsed_ms(), f"{type(exc).__name__}: {exc}"[:300]

    async def _pinned(self, url: str) -> tuple[str, dict[str, str], dict]:
        """The URL to connect to, resolved once and checked: no DNS rebinding.

        The name is resolved here, every address checked, and the request then
        goes to that checked address (the ``Host`` header and, for https, the
        TLS server name and certificate check keep the original name), so a
        second resolution cannot swap in a private address between check and
        connect.

        Returns:
          ``(url with the address as host, extra headers, httpx extensions)``.

        Raises:
          _Refused: not https, or the host is or resolves to a non-public address, or does not resolve.
        """
        try:
            _, host = rules.validate_url(url)
        except Exception:  # noqa: BLE001 - stored URLs were validated; be safe anyway
            raise _Refused("the URL is not valid") from None
        parts = urllib.parse.urlsplit(url)
        kind = rules.classify_host(host)
        if kind is rules.HostKind.PRIVATE:
            raise _Refused("the URL points at a private address")
        addresses = [host.strip("[]")]
        if kind is rules.HostKind.NAME:
            try:
                addresses = await self._resolve(host)
            except OSError as exc:
                raise _Refused(f"{host} does not resolve: {exc}") from None
            if not addresses:
                raise _Refused(f"{host} does not resolve")
            if any(rules.is_private_address(a) for a in addresses):
                raise _Refused(f"{host} resolves to a private address")
        if parts.scheme != "https":
            raise _Refused("only https URLs are sent to when private URLs are not allowed")
        if kind is rules.HostKind.PUBLIC:
            return url, {}, {}  # an IP literal: nothing to resolve
        address = addresses[0]
        netloc = f"[{address}]" if ":" in address else address
        if parts.port is not None:
            netloc += f":{parts.port}"
        pinned = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        host_header = parts.netloc.rpartition("@")[2]
        return pinned, {"host": host_header}, {"sni_hostname": host}


class _Refused(Exception):
    """An outgoing webhook URL that must not be contacted now."""
