"""Sends the simulated gateways' webhooks over real HTTP to ``/webhooks/{connector}``.

Knobs (settings ``PAYCAST_SIM_*``): a base delay, a duplicate rate (the same
event sent twice) and reordering (a random extra delay per event, so events
overtake each other). The queue is bounded: when it is full the event is
dropped and counted, which a real gateway would also do eventually, and
reconciliation resolves the payment.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import time

import httpx
import trio

from domain import signatures, webhooks

log = logging.getLogger("paycast.simulator")
# Plenty for bursts of asynchronous payments; bounded so a stalled server
# cannot make the simulator grow without limit.
QUEUE_SIZE = 10_000
# Concurrent deliveries in flight.
CONCURRENCY = 16


class WebhookSimulator:
    """Schedules and sends signed gateway webhooks.

    Args:
      secrets_by_connector: signing secrets.
      delay_ms, duplicate_rate, reorder: the knobs.
    """

    def __init__(self, secrets_by_connector: dict[str, str], *, delay_ms: int, duplicate_rate: float,
                 reorder: bool, rng: random.Random | None = None) -> None:
        self._secrets = secrets_by_connector
        self._delay_s = delay_ms / 1000
        self._duplicate_rate = duplicate_rate
        self._reorder = reorder
        self._rng = rng or random.Random()
        self._send, self._receive = trio.open_memory_channel[tuple](QUEUE_SIZE)
        self.base_url: str | None = None
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def schedule(self, connector: str, kind: str, txn_id: str, amount: int, currency: str,
                 metadata: dict[str, str], status: str | None = None) -> None:
        """Queue a webhook (non-blocking; safe to call from any trio task)."""
        body = webhooks.build(connector, kind, event_id=f"evt_sim_{secrets.token_hex(10)}", txn_id=txn_id,
                              amount=amount, currency=currency, created=int(time.time()), metadata=metadata,
                              status=status)
        copies = 2 if self._rng.random() < self._duplicate_rate else 1
        for _ in range(copies):
            delay = self._delay_s + (self._rng.random() * self._delay_s * 4 if self._reorder else 0)
            try:
                self._send.send_nowait((trio.current_time() + delay, connector, body))
            except trio.WouldBlock:
                self.dropped += 1
                log.warning("simulator queue full; dropped a %s webhook", kind)

    async def run(self, *, task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
        limiter = trio.Semaphore(CONCURRENCY)
        # verify=False: it only ever posts to this process's own listening address
        # (set_base_url), which under TLS carries a certificate for the public name.
        async with httpx.AsyncClient(timeout=10, verify=False) as client, trio.open_nursery() as nursery:
            task_status.started()
            async for due, connector, body in self._receive:
                await limiter.acquire()
                nursery.start_soon(self._deliver, client, limiter, due, connector, body,
                                   name="simulator:deliver")

    async def _deliver(self, client: httpx.AsyncClient, limiter: trio.Semaphore, due: float,
                       connector: str, body: dict) -> None:
        try:
            await trio.sleep_until(due)
            raw = json.dumps(body).encode()
            headers = {"Content-Type": "application/json"}
            secret = self._secrets[connector]
            if webhooks.FORMATS[connector] == "stripe":
                headers["Stripe-Signature"] = signatures.stripe_header(secret, raw, int(time.time()))
            else:
                headers["X-Razorpay-Signature"] = signatures.razorpay_header(secret, raw)
            for attempt in range(5):  # gateways retry too; the inbox de-duplicates
                try:
                    response = await client.post(f"{self.base_url}/webhooks/{connector}", content=raw,
                                                 headers=headers)
                    if response.status_code == 200:
                        self.sent += 1
                        return
                    log.warning("webhook to %s answered %s", connector, response.status_code)
                except httpx.HTTPError as exc:
                    log.warning("webhook to %s failed: %s", connector, exc)
                await trio.sleep(0.2 * 2**attempt)
            self.failed += 1
        finally:
            limiter.release()
