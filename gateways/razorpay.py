"""The Razorpay connector: orders and Checkout, over plain httpx.

Razorpay's model (https://razorpay.com/docs/api/) is not Stripe's:

* the server creates an **order** (``POST /v1/orders``); the customer pays
  it inside Razorpay Checkout (card, UPI, netbanking, wallet) with the
  order id and the account's ``key_id``; webhooks tell the server what
  happened. So :meth:`RazorpayConnector.authorize` answers
  ``requires_action`` with a ``connector_sdk`` next action, and the
  attempt's ``connector_txn_id`` is the order id;
* one order may see several payments (failed tries, then one that
  succeeds): capture, refunds and reconciliation read the order's payments
  (``GET /v1/orders/{id}/payments``) to find the Razorpay payment
  (``pay_…``) they act on;
* there are **no idempotency keys**. A mutating call that ended without an
  answer is never repeated blindly: the order is found again by its
  ``receipt`` (our payment id) and ``notes.attempt_id``, a refund by its
  ``receipt`` (our refund id) among the payment's refunds, a capture by the
  payment's status; only what is not there is (re)created;
* a capture is of the whole amount (``partial_capture = False``), and an
  authorisation cannot be voided: Razorpay refunds an uncaptured
  authorisation itself after a few days, and an unpaid order simply lapses,
  so :meth:`void` sends nothing.

The official ``razorpay`` SDK is synchronous (``requests``), so it is not
used here; the tests use it to cross-check the webhook signature scheme.
"""

from __future__ import annotations

import logging

import httpx

from domain.payments import Outcome, OutcomeKind
from domain.razorpay_events import error_code, method_details
from domain.submission import Submission
from gateways.base import (AuthorizeRequest, ConnectorError, ConnectorRefused, ConnectorServerError,
                           ConnectorTimeout, ConnectorUnavailable, CredentialsInvalid, PayoutRequest, RefundRequest)

log = logging.getLogger("paycast.connectors.razorpay")

DEFAULT_API_BASE = "https://api.razorpay.com"
PAGE = 100  # Razorpay's largest ``count`` for lists
# Razorpay refund status → our submission status.
_REFUND_STATUS = {"processed": "succeeded", "failed": "failed", "pending": "pending", "created": "pending"}


class RazorpayUnreachable(ConnectorUnavailable):
    """No connection could be made: the request was never sent."""


def _captured(payment: dict) -> bool:
    # A refunded payment was captured first (status "refunded", captured true).
    return payment.get("captured") is True or payment.get("status") in ("captured", "refunded")


class RazorpayConnector:
    """One merchant's Razorpay account.

    Args:
      credentials: ``{"key_id": "rzp_test_…", "key_secret": "…"}`` (HTTP Basic).
      api_base: where the API lives (``PAYCAST_RAZORPAY_API_BASE``); None: Razorpay's.
      account_id: our connector account (``mca_…``), for logs.
      timeout_s: the HTTP timeout of one call.
    """

    name = "razorpay"
    methods = frozenset({"card", "upi", "netbanking", "wallet"})
    credential_fields = ("key_id", "key_secret")
    #: Razorpay captures the whole authorised amount or nothing.
    partial_capture = False
    #: Raised before anything was processed: a refused login, a definite 4xx,
    #: no connection at all. A 5xx or a timeout may hide a created order or refund.
    not_processed_errors: tuple[type[ConnectorError], ...] = (CredentialsInvalid, ConnectorRefused,
                                                              RazorpayUnreachable)

    def __init__(self, credentials: dict, *, api_base: str | None = None, account_id: str = "",
                 timeout_s: float = 5.0) -> None:
        self.key_id = credentials["key_id"]
        self.account_id = account_id
        self._http = httpx.AsyncClient(base_url=(api_base or DEFAULT_API_BASE).rstrip("/"),
                                       auth=(credentials["key_id"], credentials["key_secret"]),
                                       timeout=timeout_s, headers={"User-Agent": "paycast"})

    # -- HTTP ---------------------------------------------------------------

    async def _call(self, method: str, path: str, *, json: dict | None = None, params: dict | None = None) -> dict:
        """One request; Razorpay's answer as a dict, or a typed error.

        Raises:
          RazorpayUnreachable: no connection (nothing sent).
          ConnectorTimeout: sent, no answer in time (it may have happened).
          CredentialsInvalid: 401/403.
          ConnectorRefused: another 4xx (code: Razorpay's ``reason``, else its ``code``).
          ConnectorServerError: 5xx.
          ConnectorError: the connection broke mid-way, or an unexpected (3xx) answer.

        Returns:
          The JSON object answered (``{}`` for a 2xx without one).
        """
        try:
            response = await self._http.request(method, path, json=json, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise RazorpayUnreachable(f"razorpay: no connection for {method} {path} ({type(exc).__name__})") from None
        except httpx.TimeoutException:
            raise ConnectorTimeout(f"razorpay: no answer in time for {method} {path}") from None
        except httpx.HTTPError as exc:
            raise ConnectorError(f"razorpay: {method} {path} failed ({type(exc).__name__})") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code < 300:
            return body if isinstance(body, dict) else {}
        error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
        message = f"razorpay: {method} {path}: {error.get('description') or response.reason_phrase}"
        if response.status_code in (401, 403):
            raise CredentialsInvalid(f"razorpay refused the credentials ({response.status_code})")
        if response.status_code >= 500:
            raise ConnectorServerError(message)
        if 400 <= response.status_code < 500:
            code = error.get("reason") if error.get("reason") not in (None, "NA") else error.get("code")
            raise ConnectorRefused(message, code=str(code).lower() if code else None)
        raise ConnectorError(f"razorpay: {method} {path}: unexpected answer {response.status_code}")

    async def _list(self, path: str, **params) -> list[dict]:
        """Every item of a Razorpay collection, page by page."""
        items: list[dict] = []
        while True:
            page = await self._call("GET", path, params={**params, "count": PAGE, "skip": len(items)})
            got = [i for i in page.get("items") or [] if isinstance(i, dict)]
            items.extend(got)
            if len(got) < PAGE:
                return items

    # -- account ------------------------------------------------------------

    async def verify_credentials(self) -> bool:
        """One cheap authenticated read (the newest order).

        Returns:
          Whether the key is a live-mode key (``rzp_live_…``).

        Raises:
          CredentialsInvalid, ConnectorUnavailable (and other ConnectorErrors).
        """
        try:
            await self._call("GET", "/v1/orders", params={"count": 1})
        except (ConnectorServerError, ConnectorTimeout) as exc:
            raise ConnectorUnavailable(str(exc)) from None
        return self.key_id.startswith("rzp_live_")

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- payments -----------------------------------------------------------

    def _next_action(self, order_id: str, amount: int, currency: str) -> dict:
        return {"type": "connector_sdk", "connector_sdk": {"connector": "razorpay", "data": {
            "key_id": self.key_id, "order_id": order_id, "amount": amount, "currency": currency}}}

    async def authorize(self, request: AuthorizeRequest) -> Outcome:
        """Create the order the customer pays in Checkout.

        Returns:
          ``REQUIRES_ACTION`` with the order id and Checkout's parameters.

        Raises:
          ConnectorError: the order could not be created (a 4xx: nothing exists).
        """
        order = await self._call("POST", "/v1/orders", json={
            "amount": request.amount, "currency": request.currency, "receipt": request.payment_id,
            "payment_capture": request.capture_method != "manual",
            "notes": {"payment_id": request.payment_id, "attempt_id": request.attempt_id,
                      "merchant_id": request.merchant_id, "capture_method": request.capture_method}})
        return Outcome(OutcomeKind.REQUIRES_ACTION, order["id"],
                       next_action=self._next_action(order["id"], request.amount, request.currency))

    async def _find_order(self, payment_id: str, request: AuthorizeRequest | None) -> dict | None:
        """The order an unanswered create may have made: same receipt and, when known, same attempt."""
        orders = await self._list("/v1/orders", receipt=payment_id)
        if request is not None:
            orders = [o for o in orders if isinstance(o.get("notes"), dict)
                      and o["notes"].get("attempt_id") == request.attempt_id]
        return max(orders, key=lambda o: o.get("created_at") or 0, default=None)

    async def _payments(self, order_id: str) -> list[dict]:
        return await self._list(f"/v1/orders/{order_id}/payments")

    async def _card(self, payment: dict) -> dict | None:
        """Brand and last 4 of a card payment. Lists show only ``card_id``: the
        payment is read once more with ``expand[]=card``. Cosmetic, so a failed
        read gives None rather than failing the reconciliation that asked."""
        if payment.get("method") != "card":
            return None
        if not isinstance(payment.get("card"), dict):
            try:
                payment = await self._call("GET", f"/v1/payments/{payment.get('id')}", params={"expand[]": "card"})
            except ConnectorError as exc:
                log.warning("razorpay: card details of %s not read: %s", payment.get("id"), exc)
                return None
        return method_details(payment)

    async def retrieve(self, connector_txn_id: str | None, payment_id: str, *,
                       request: AuthorizeRequest | None = None) -> Outcome:
        """What became of the attempt, from the order's payments.

        Returns:
          ``SUCCEEDED`` (a payment captured), ``AUTHORIZED`` (held, manual
          capture), ``PENDING`` (held, Razorpay is about to capture it
          automatically), ``REQUIRES_ACTION`` (nothing paid yet, or only failed
          tries), or ``DECLINED`` ``order_not_found`` when the create never
          made an order (nothing is ever created here).
        """
        order = None
        if connector_txn_id is None:
            order = await self._find_order(payment_id, request)
            if order is None:
                return Outcome(OutcomeKind.DECLINED, None, "order_not_found",
                               "Razorpay has no order for this attempt: nothing was created.")
            connector_txn_id = order["id"]
        elif request is None:
            order = await self._call("GET", f"/v1/orders/{connector_txn_id}")
        payments = await self._payments(connector_txn_id)
        captured = next((p for p in payments if _captured(p)), None)
        if captured is not None:
            return Outcome(OutcomeKind.SUCCEEDED, connector_txn_id, method_details=await self._card(captured))
        held = next((p for p in payments if p.get("status") == "authorized"), None)
        if order is not None:
            notes = order.get("notes") if isinstance(order.get("notes"), dict) else {}
            amount, currency, capture = order.get("amount"), order.get("currency"), notes.get("capture_method")
        else:
            amount, currency, capture = request.amount, request.currency, request.capture_method
        if held is not None:
            kind = OutcomeKind.AUTHORIZED if capture == "manual" else OutcomeKind.PENDING
            return Outcome(kind, connector_txn_id, method_details=await self._card(held))
        last = max((p for p in payments if p.get("status") == "failed"), key=lambda p: p.get("created_at") or 0,
                   default=None)
        return Outcome(OutcomeKind.REQUIRES_ACTION, connector_txn_id,
                       error_code=error_code(last or {}),
                       message=(last or {}).get("error_description") or None,
                       next_action=self._next_action(connector_txn_id, amount, currency))

    async def capture(self, connector_txn_id: str, amount: int, *, idempotency_key: str | None = None) -> None:
        """Capture the order's authorised payment, whole.

        A capture that already happened (a retry after an unanswered call)
        is found by reading the payment first, and not sent again.

        Raises:
          ConnectorRefused: ``partial_capture_unsupported`` (``amount`` is not
            the authorised amount; nothing sent), ``payment_not_authorized``
            (nothing to capture), or Razorpay's own refusal.
        """
        payments = await self._payments(connector_txn_id)
        if any(_captured(p) for p in payments):
            return
        held = next((p for p in payments if p.get("status") == "authorized"), None)
        if held is None:
            raise ConnectorRefused("razorpay: the order has no authorised payment to capture",
                                   code="payment_not_authorized")
        if amount != held.get("amount"):
            raise ConnectorRefused("razorpay captures the whole authorised amount only",
                                   code="partial_capture_unsupported")
        try:
            await self._call("POST", f"/v1/payments/{held['id']}/capture",
                             json={"amount": amount, "currency": held.get("currency")})
        except ConnectorRefused:
            # "already captured" when a racing capture won: the payment says so.
            if any(_captured(p) for p in await self._payments(connector_txn_id)):
                return
            raise

    async def void(self, connector_txn_id: str, *, idempotency_key: str | None = None) -> None:
        """Nothing to call: Razorpay has no void. An uncaptured authorisation is
        refunded to the customer by Razorpay itself (after about five days);
        an order nobody paid lapses. Paycast marks the payment canceled."""
        log.info("razorpay: void of %s needs no call (Razorpay releases holds itself)", connector_txn_id)

    # -- refunds ------------------------------------------------------------

    async def _captured_payment(self, order_id: str) -> dict:
        payment = next((p for p in await self._payments(order_id) if _captured(p)), None)
        if payment is None:
            raise ConnectorRefused("razorpay: the order has no captured payment to refund",
                                   code="payment_not_captured")
        return payment

    async def _find_refund(self, razorpay_payment_id: str, refund_id: str) -> dict | None:
        refunds = await self._list(f"/v1/payments/{razorpay_payment_id}/refunds")
        return next((r for r in refunds if r.get("receipt") == refund_id), None)

    @staticmethod
    def _submission(refund: dict) -> Submission:
        status = _REFUND_STATUS.get(refund.get("status"), "pending")
        return Submission(status, refund.get("id"), "refund_failed" if status == "failed" else None)

    async def refund(self, request: RefundRequest) -> Submission:
        """Refund (full or part) the order's captured payment, once.

        The payment's refunds are read first: a refund with our receipt
        means an earlier call did create it, and it is not created again.
        """
        payment = await self._captured_payment(request.connector_txn_id)
        existing = await self._find_refund(payment["id"], request.refund_id)
        if existing is not None:
            return self._submission(existing)
        refund = await self._call("POST", f"/v1/payments/{payment['id']}/refund", json={
            "amount": request.amount, "speed": "normal", "receipt": request.refund_id,
            "notes": {"refund_id": request.refund_id, "payment_id": request.payment_id,
                      "razorpay_order_id": request.connector_txn_id}})
        return self._submission(refund)

    async def retrieve_refund(self, request: RefundRequest, reference: str | None) -> Submission:
        """The refund found by its receipt among the payment's refunds; not
        there: it was never created (``failed``, ``refund_not_found``)."""
        payment = await self._captured_payment(request.connector_txn_id)
        found = await self._find_refund(payment["id"], request.refund_id)
        if found is None:
            return Submission("failed", None, "refund_not_found")
        return self._submission(found)

    # -- disputes -----------------------------------------------------------

    async def submit_dispute_evidence(self, connector_dispute_id: str, text: str, *, payment_id: str,
                                      dispute_id: str, amount: int, currency: str) -> None:
        """Contest the dispute with the text as its summary, submitted (not a draft).

        Razorpay may ask for documents too: those are uploaded in its
        dashboard (Paycast's evidence is text only).
        """
        await self._call("PATCH", f"/v1/disputes/{connector_dispute_id}/contest",
                         json={"amount": amount, "summary": text[:1000], "action": "submit"})

    async def accept_dispute(self, connector_dispute_id: str) -> None:
        await self._call("POST", f"/v1/disputes/{connector_dispute_id}/accept")

    # -- payouts (RazorpayX, another product) --------------------------------

    async def payout(self, request: PayoutRequest) -> Submission:
        raise ConnectorRefused("razorpay: payouts are not offered by this connector", code="payouts_unsupported")

    async def retrieve_payout(self, request: PayoutRequest, reference: str | None) -> Submission:
        raise ConnectorRefused("razorpay: payouts are not offered by this connector", code="payouts_unsupported")
