"""Merchants' connector accounts: create (credentials tried first), read (masked),
rotate, disable; and the per-account connector objects calls and webhooks use.

A real connector (``stripe``, ``razorpay``) is one object per account, built
from the account's decrypted credentials by the class in :data:`REGISTRY`
(``cls(credentials, api_base=..., account_id=..., timeout_s=...)``, the
:class:`gateways.base.RealConnector` protocol). Built objects are cached per
account and credentials version; another process's rotation is seen within
:data:`CACHE_TTL_S` (the version is read again), and a replaced object is
closed once calls already running on it have had the connector timeout to end.

Secrets: credentials and the webhook secret are sealed before they are stored
and opened only to build a connector or verify a webhook; they are never
logged, rendered, or put in an error message (a gateway's refusal is
reported by type, not by text).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from config import Settings
from domain import connector_accounts as rules
from domain.errors import InvalidRequest, Unavailable
from domain.ids import new_id
from gateways.base import ConnectorError, CredentialsInvalid
from gateways.instrumented import InstrumentedConnector
from storage import connector_accounts as store
from storage.database import Database
from storage.secrets_box import SecretsBox, context_of

log = logging.getLogger("paycast.connector_accounts")

# The real connectors' classes, imported when first needed (a connector's
# module and its SDK load only in processes that have such an account).
REGISTRY: Mapping[str, str] = {
    "stripe": "gateways.stripe:StripeConnector",
    "razorpay": "gateways.razorpay:RazorpayConnector",
}
# How long a cached connector or webhook secret is used before the account's
# version is read again (another process's rotation is seen within this).
CACHE_TTL_S = 5.0
# A webhook secret is read afresh (a signature failed with the cached one) at most
# this often: forged signatures cost at most one read a second per account.
FRESH_MIN_S = 1.0


@dataclass
class _Cached:
    connector: object
    version: int
    checked_at: float


@dataclass(frozen=True)
class WebhookTarget:
    """What a per-account webhook is verified with and stored under."""

    account_id: str
    merchant_id: str
    secret: str

    def __repr__(self) -> str:  # never the secret
        return f"WebhookTarget(account_id={self.account_id!r}, merchant_id={self.merchant_id!r})"


def connector_class(name: str) -> type:
    """The class of real connector ``name`` (:data:`REGISTRY`)."""
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


class ConnectorAccounts:
    """The connector-accounts surface and the per-account connector objects.

    Args:
      settings: API bases (``PAYCAST_STRIPE_API_BASE``, ``PAYCAST_RAZORPAY_API_BASE``)
        and the connector timeout.
      db: the open database.
      box: seals and opens credentials and webhook secrets.
    """

    def __init__(self, settings: Settings, db: Database, box: SecretsBox) -> None:
        self._db = db
        self._box = box
        self._timeout_s = settings.connector_timeout_s
        self._api_base = {"stripe": settings.stripe_api_base, "razorpay": settings.razorpay_api_base}
        self._connectors: dict[str, _Cached] = {}
        # (connector, account) → (target, read at, last read afresh at)
        self._secrets: dict[tuple[str, str], tuple[WebhookTarget, float, float]] = {}
        self._retired: list[tuple[float, object]] = []
        self._lock = trio.Lock()

    # -- the HTTP surface ---------------------------------------------------

    async def create(self, merchant_id: str, data: object) -> dict:
        """``POST /v1/connector_accounts``: try the credentials, then store them sealed.

        Returns:
          The account's API form (masked).

        Raises:
          InvalidRequest: a bad field, or (code ``connector_credentials_invalid``)
            the gateway refused the credentials.
          StateError: (409 ``connector_account_exists``) an active account of that connector exists.
          Unavailable: (503 ``connector_unavailable``) the gateway could not be asked.
        """
        change = rules.parse_create(data)
        connector = change.connector
        if await self._db.transaction(store.active_id, merchant_id, connector) is not None:
            raise store.exists_error(connector)  # before the gateway is asked at all
        account_id = new_id("mca")
        livemode = await self._try_credentials(connector, change.credentials, account_id)
        row = await self._db.transaction(store.insert, {
            "id": account_id, "merchant_id": merchant_id, "connector": connector, "label": change.label,
            "livemode": livemode,
            "credentials_sealed": self._box.seal_json(change.credentials, _context("credentials_sealed", account_id)),
            "webhook_secret_sealed": self._box.seal(change.webhook_secret,
                                                    _context("webhook_secret_sealed", account_id)),
            "credentials_mask": rules.mask(connector, change.credentials),
        })
        log.info("connector account %s created (%s, livemode=%s) for %s", account_id, connector, livemode,
                 merchant_id)
        return rules.render(row)

    async def get(self, merchant_id: str, account_id: str) -> dict:
        """One of the merchant's accounts (another merchant's is a 404)."""
        return rules.render(await self._db.transaction(store.get, merchant_id, account_id))

    async def list_page(self, merchant_id: str, *, limit: int, starting_after: str | None) -> tuple[list[dict], bool]:
        """A newest-first page of the merchant's accounts."""
        rows, more = await self._db.transaction(store.list_page, merchant_id, limit=limit,
                                                starting_after=starting_after)
        return [rules.render(r) for r in rows], more

    async def update(self, merchant_id: str, account_id: str, data: object) -> dict:
        """``POST /v1/connector_accounts/{id}``: rotate credentials (tried first), the
        webhook secret, or the label.

        Raises:
          NotFound: not this merchant's account.
          InvalidRequest, Unavailable: as :meth:`create` for the new credentials.
          StateError: another update changed the account meanwhile.
        """
        row = await self._db.transaction(store.get, merchant_id, account_id)
        change = rules.parse_update(row["connector"], data)
        changes: dict[str, object] = {}
        if change.credentials is not None:
            changes["livemode"] = await self._try_credentials(row["connector"], change.credentials, account_id)
            changes["credentials_sealed"] = self._box.seal_json(change.credentials,
                                                                _context("credentials_sealed", account_id))
            changes["credentials_mask"] = rules.mask(row["connector"], change.credentials)
        if change.webhook_secret is not None:
            changes["webhook_secret_sealed"] = self._box.seal(change.webhook_secret,
                                                              _context("webhook_secret_sealed", account_id))
        if change.label is not ...:
            changes["label"] = change.label
        if not changes:
            return rules.render(row)
        updated = await self._db.transaction(store.update, merchant_id, account_id, version=row["version"],
                                             changes=changes)
        self._forget(account_id)
        log.info("connector account %s updated (%s)", account_id,
                 ", ".join(sorted(k.removesuffix("_sealed") for k in changes if k != "credentials_mask")))
        return rules.render(updated)

    async def disable(self, merchant_id: str, account_id: str) -> dict:
        """``DELETE /v1/connector_accounts/{id}`` → ``disabled``: no new attempt goes to it;
        its in-flight attempts are still reconciled and its webhooks still applied."""
        row = await self._db.transaction(store.disable, merchant_id, account_id)
        log.info("connector account %s disabled", account_id)
        return rules.render(row)

    async def active(self, merchant_id: str) -> dict[str, str]:
        """The merchant's active accounts, ``{connector: account id}`` (routing, /v1/connectors)."""
        return await self._db.transaction(store.active_by_connector, merchant_id)

    # -- calls and webhooks ---------------------------------------------------

    async def connector(self, account_id: str) -> object | None:
        """The connector object of an account (any status: a disabled account's
        in-flight work still settles), or None when there is no such account.

        Raises:
          Unavailable: the database cannot answer now.
        """
        now = trio.current_time()
        cached = self._connectors.get(account_id)
        if cached is not None and now - cached.checked_at < CACHE_TTL_S:
            return cached.connector
        async with self._lock:  # one build per account, however many callers arrive at once
            cached = self._connectors.get(account_id)
            if cached is not None and now - cached.checked_at < CACHE_TTL_S:
                return cached.connector
            row = await self._db.transaction(store.for_call, account_id)
            if row is None:
                return None
            if cached is not None and cached.version == row["version"]:
                cached.checked_at = now
                return cached.connector
            credentials = self._box.open_json(row["credentials_sealed"], _context("credentials_sealed", account_id))
            built = InstrumentedConnector(self._build(row["connector"], credentials, account_id))
            if cached is not None:
                self._retire(cached.connector)
            self._connectors[account_id] = _Cached(built, row["version"], now)
        await self._close_retired()
        return built

    async def webhook_target(self, connector: str, account_id: str, *, fresh: bool = False) -> WebhookTarget | None:
        """The webhook secret and merchant of an account of ``connector`` (any status), or None.

        Args:
          fresh: read it from the database even if cached, unless it was read afresh
            within :data:`FRESH_MIN_S` (a signature that failed with the cached secret
            may be signed with one rotated in another process).
        """
        now = trio.current_time()
        cached = self._secrets.get((connector, account_id))
        if cached is not None:
            if fresh and now - cached[2] < FRESH_MIN_S:
                return cached[0]
            if not fresh and now - cached[1] < CACHE_TTL_S:
                return cached[0]
        row = await self._db.transaction(store.for_webhook, connector, account_id)
        if row is None:
            return None
        target = WebhookTarget(account_id, row["merchant_id"],
                               self._box.open(row["webhook_secret_sealed"],
                                              _context("webhook_secret_sealed", account_id)))
        if len(self._secrets) > 10_000:
            self._secrets.clear()
        self._secrets[(connector, account_id)] = (target, now, now if fresh else float("-inf"))
        return target

    async def aclose(self) -> None:
        """Close every connector built here (process shutdown)."""
        for cached in self._connectors.values():
            self._retired.append((float("-inf"), cached.connector))
        self._connectors.clear()
        await self._close_retired(force=True)

    # -- inside ---------------------------------------------------------------

    def _build(self, name: str, credentials: dict, account_id: str):
        cls = connector_class(name)
        return cls(credentials, api_base=self._api_base[name], account_id=account_id, timeout_s=self._timeout_s)

    async def _try_credentials(self, name: str, credentials: dict, account_id: str) -> bool:
        """Ask the gateway whether ``credentials`` work (a cheap authenticated read).

        Returns:
          ``livemode``.

        Raises:
          InvalidRequest: refused (``connector_credentials_invalid``).
          Unavailable: the gateway could not be reached in time (``connector_unavailable``).
        """
        connector = self._build(name, credentials, account_id)
        try:
            with trio.fail_after(self._timeout_s + 1):
                return bool(await connector.verify_credentials())
        except CredentialsInvalid:
            raise InvalidRequest(f"The {name} credentials were refused by {name}.", param="credentials",
                                 code="connector_credentials_invalid") from None
        except (ConnectorError, trio.TooSlowError) as exc:
            # The error's text may quote the gateway; only its type is reported.
            log.warning("connector account check: %s did not answer (%s)", name, type(exc).__name__)
            raise Unavailable(f"{name} could not be reached to check the credentials; retry shortly.",
                              code="connector_unavailable") from None
        finally:
            with trio.CancelScope(shield=True):
                await connector.aclose()

    def _forget(self, account_id: str) -> None:
        """Drop this process's cached connector and secret of an account (it just changed)."""
        cached = self._connectors.pop(account_id, None)
        if cached is not None:
            self._retire(cached.connector)
        for key in [k for k in self._secrets if k[1] == account_id]:
            del self._secrets[key]

    def _retire(self, connector: object) -> None:
        # Calls already running on it may go on for up to the connector timeout.
        self._retired.append((trio.current_time() + self._timeout_s + 1, connector))

    async def _close_retired(self, *, force: bool = False) -> None:
        now = trio.current_time()
        due = [c for t, c in self._retired if force or t <= now]
        self._retired = [(t, c) for t, c in self._retired if not (force or t <= now)]
        for connector in due:
            with trio.CancelScope(shield=True):
                try:
                    await connector.aclose()
                except Exception:  # noqa: BLE001 - closing a client must not fail a call
                    log.warning("closing a replaced connector failed", exc_info=True)


def _context(column: str, account_id: str) -> str:
    return context_of("connector_accounts", column, account_id)

