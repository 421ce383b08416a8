"""Outgoing webhooks: merchants' endpoints, their deliveries and the dispatcher."""

from __future__ import annotations

from collections.abc import Callable

import trio

from actors.webhook_dispatcher import WebhookDispatcher
from config import Settings
from domain import render
from domain.ids import new_id
from domain.outgoing_webhooks import new_secret
from storage import webhook_deliveries, webhook_endpoints
from storage.database import Database
from storage.secrets_box import SecretsBox, context_of


async def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to (for the private-URL check)."""
    infos = await trio.socket.getaddrinfo(host, None)
    return sorted({info[4][0] for info in infos})


class WebhooksOut:
    """The outgoing-webhook surface.

    Args:
      settings: retry schedule and whether private URLs are allowed.
      db: the open database.
      wake_dispatcher: wakes the dispatcher after a retry, here or in the
        process that runs it.
      box: seals endpoint secrets at rest; the dispatcher opens them to sign.
    """

    def __init__(self, settings: Settings, db: Database, wake_dispatcher: Callable[[], None],
                 box: SecretsBox) -> None:
        self._db = db
        self._box = box
        self._wake_dispatcher = wake_dispatcher
        self.allow_private_urls = settings.webhook_allow_private_urls
        self.dispatcher = WebhookDispatcher(db, allow_private_urls=settings.webhook_allow_private_urls,
                                            resolve=resolve_host, retry_schedule=settings.retry_schedule,
                                            open_secret=self.open_secret)

    def open_secret(self, endpoint_id: str, stored: str) -> str:
        """An endpoint's signing secret from its stored (sealed) form."""
        return self._box.open(stored, context_of("webhook_endpoints", "secret", endpoint_id))

    async def create_endpoint(self, merchant_id: str, url: str, events: list[str], description: str | None) -> dict:
        """Create an endpoint with a fresh secret, stored sealed.

        Returns:
          Its API form with the plaintext secret (shown this once).
        """
        endpoint_id, secret = new_id("we"), new_secret()
        sealed = self._box.seal(secret, context_of("webhook_endpoints", "secret", endpoint_id))
        row = await self._db.transaction(webhook_endpoints.create, merchant_id, endpoint_id, url, events,
                                         description, sealed)
        return render.webhook_endpoint(row) | {"secret": secret}

    async def list_endpoints(self, merchant_id: str, **page) -> tuple[list[dict], bool]:
        return await self._db.transaction(webhook_endpoints.list_page, merchant_id, **page)

    async def get_endpoint(self, merchant_id: str, endpoint_id: str) -> dict:
        return await self._db.transaction(webhook_endpoints.get, merchant_id, endpoint_id)

    async def delete_endpoint(self, merchant_id: str, endpoint_id: str) -> dict:
        return await self._db.transaction(webhook_endpoints.delete, merchant_id, endpoint_id)

    async def list_deliveries(self, merchant_id: str, endpoint_id: str, **page) -> tuple[list[dict], bool]:
        return await self._db.transaction(webhook_deliveries.list_page, merchant_id, endpoint_id, **page)

    async def retry(self, merchant_id: str, endpoint_id: str, delivery_id: str) -> dict:
        """Schedule a delivery again now and wake the dispatcher."""
        delivery = await self._db.transaction(webhook_deliveries.retry, merchant_id, endpoint_id, delivery_id)
        self._wake_dispatcher()  # the dispatcher may run in a worker process
        return delivery
