"""The Stripe connector: one merchant's Stripe account, called through the
official ``stripe`` SDK's async client (``StripeClient`` on ``HTTPXClient``:
httpx over anyio, so it runs under trio as it is).

How each call maps to Stripe (docs.stripe.com/api):

- authorize: ``POST /v1/payment_intents`` with ``confirm: true``, the card
  token, ``capture_method``, ``return_url`` when the payer has one, metadata
  ``{payment_id, attempt_id, merchant_id}``; idempotency key = the attempt id.
- capture: ``POST /v1/payment_intents/{id}/capture`` (``amount_to_capture``,
  partial allowed); void: ``…/cancel`` (also from ``requires_action``); keys
  :func:`gateways.base.operation_key`.
- retrieve: ``GET /v1/payment_intents/{id}``; when the create ended without an
  answer (no id), the create is replayed with the same idempotency key: Stripe
  answers what the first request did (for 24 hours) instead of charging again.
- refund: ``POST /v1/refunds`` (key = our refund id, metadata ``refund_id``,
  ``payment_id``); retrieve_refund reads it, or finds it among the
  PaymentIntent's refunds by metadata before ever replaying the create.
- disputes: evidence is ``POST /v1/disputes/{id}`` with ``submit: true``;
  accepting is ``POST /v1/disputes/{id}/close``.
- payouts: Paycast's wallets pay out through the simulators; Stripe payouts
  (to the merchant's own bank) are not Paycast's to make: refused.

SDK network retries are off (``max_network_retries=0``): whether and when to
ask again is reconciliation's decision, with the same keys.
"""

from __future__ import annotations

from typing import Any

import httpx
import stripe

from domain import stripe_objects as so
from domain.payments import Outcome
from gateways.base import (AuthorizeRequest, ConnectorError, ConnectorRefused, ConnectorServerError,
                           ConnectorTimeout, ConnectorUnavailable, CredentialsInvalid, PayoutRequest, RefundRequest,
                           Submission, operation_key)


class StripeNotSent(ConnectorUnavailable):
    """The connection to Stripe could not be opened: no request byte left this process."""


class StripeRateLimited(ConnectorUnavailable):
    """Stripe refused the request for its rate limit (429) before processing it."""

    code = "connector_rate_limited"


class StripeIdempotencyConflict(ConnectorError):
    """Stripe refused the key: another request with it is running (409) or was made with
    other parameters (``idempotency_error``). That other request may have charged."""

    code = "connector_idempotency_conflict"


def _key(value: str) -> dict:
    """The SDK's per-request options carrying an idempotency key."""
    return {"idempotency_key": value}


class StripeConnector:
    """One Stripe account (``mca_…``) as a :class:`gateways.base.RealConnector`.

    Args:
      credentials: ``{"secret_key": "sk_test_…"|"sk_live_…"|"rk_…"}`` (decrypted; never logged).
      api_base: another Stripe API address (``PAYCAST_STRIPE_API_BASE``: a test
        server), or None for Stripe's own.
      account_id: the connector account's id (for messages).
      timeout_s: the HTTP timeout of each call.
    """

    name = "stripe"
    methods = frozenset({"card"})
    credential_fields = ("secret_key",)
    # What guarantees that nothing was charged, so a payment may fall back to
    # another connector (see module domain.stripe_objects.classify_error):
    # - CredentialsInvalid: 401/403, Stripe authenticates before it processes anything;
    # - ConnectorRefused: a 400/404 refusal (validation, unknown object) that names
    #   no PaymentIntent: Stripe refused it before executing (a 400 that names one,
    #   a failed confirmation, is a decline instead);
    # - StripeRateLimited: 429 is refused before processing;
    # - StripeNotSent: the TCP/TLS connection never opened, so nothing was sent.
    # Not listed, so the attempt stays ``unknown`` and is reconciled: timeouts and
    # broken connections after sending (the request may have arrived), 5xx (Stripe
    # documents 500s as indeterminate and stores their result under the key), and
    # StripeIdempotencyConflict (an earlier request with the same key exists).
    not_processed_errors = (CredentialsInvalid, ConnectorRefused, StripeRateLimited, StripeNotSent)

    def __init__(self, credentials: dict, *, api_base: str | None, account_id: str, timeout_s: float) -> None:
        secret = credentials.get("secret_key")
        if not isinstance(secret, str) or not secret:
            raise ValueError("Stripe credentials need a secret_key.")
        self.account_id = account_id
        self._livemode = "_live_" in secret
        self._http = stripe.HTTPXClient(timeout=timeout_s)
        bases: dict[str, str] = {"api": api_base.rstrip("/")} if api_base else {}
        self._client = stripe.StripeClient(secret, base_addresses=bases, max_network_retries=0,
                                           http_client=self._http)

    def __repr__(self) -> str:  # never the key
        return f"StripeConnector(account_id={self.account_id!r})"

    async def aclose(self) -> None:
        await self._http.close_async()

    async def verify_credentials(self) -> bool:
        """List one PaymentIntent: a read every key Paycast can use must be allowed.

        Returns:
          Whether the key is a live one (``sk_live_``/``rk_live_``).
        """
        await self._call(self._client.v1.payment_intents.list_async({"limit": 1}))
        return self._livemode

    # -- payments -------------------------------------------------------------

    def _create_params(self, request: AuthorizeRequest) -> dict:
        token = request.payment_method.get("token")
        if not isinstance(token, str) or not token:
            # Routing never offers Stripe a raw card; this is the last guard.
            raise ConnectorRefused("Stripe takes card tokens (pm_…) only.", code="raw_card_data_not_allowed")
        metadata = {"payment_id": request.payment_id, "attempt_id": request.attempt_id,
                    "merchant_id": request.merchant_id}
        if request.order_id:
            metadata["order_id"] = request.order_id
        return so.payment_intent_params(amount=request.amount, currency=request.currency,
                                        capture_method=request.capture_method, token=token,
                                        metadata=metadata, return_url=request.return_url)

    async def authorize(self, request: AuthorizeRequest) -> Outcome:
        """Create and confirm the PaymentIntent (idempotency key: the attempt id)."""
        params = self._create_params(request)
        try:
            pi = await self._call(self._client.v1.payment_intents.create_async(
                params, _key(request.idempotency_key)))
        except _Declined as declined:
            return declined.outcome
        return so.outcome_of_payment_intent(pi)

    async def capture(self, connector_txn_id: str, amount: int, *, idempotency_key: str | None = None) -> None:
        """Capture ``amount`` (all or part) of a held PaymentIntent.

        Args:
          connector_txn_id: the PaymentIntent.
          amount: minor units, at most what is capturable.
          idempotency_key: ``operation_key(attempt, "capture")``; a repeat gets Stripe's first answer.

        Raises:
          ConnectorRefused: Stripe said no (more than held, not capturable); nothing moved.
          ConnectorError: no definite answer (see ``not_processed_errors``).
        """
        await self._call(self._client.v1.payment_intents.capture_async(
            connector_txn_id, {"amount_to_capture": amount}, _key(idempotency_key or
                                                                   operation_key(connector_txn_id, "capture"))))

    async def void(self, connector_txn_id: str, *, idempotency_key: str | None = None) -> None:
        """Cancel the PaymentIntent: a held authorisation, or one waiting for 3-D Secure.

        Args:
          connector_txn_id: the PaymentIntent.
          idempotency_key: ``operation_key(attempt, "cancel")``: a merchant's cancel and the
            abandonment rule racing send the same key, so Stripe answers both alike.

        Raises:
          ConnectorRefused: its state allows no cancel (already captured or canceled).
          ConnectorError: no definite answer.
        """
        await self._call(self._client.v1.payment_intents.cancel_async(
            connector_txn_id, None, _key(idempotency_key or operation_key(connector_txn_id, "cancel"))))

    async def retrieve(self, connector_txn_id: str | None, payment_id: str, *,
                       request: AuthorizeRequest | None = None) -> Outcome:
        """What became of the attempt at Stripe.

        With the PaymentIntent's id: its current state. Without it (the create
        ended without an answer): the create replayed under the same idempotency
        key, which Stripe answers with the first request's stored result (or
        executes it, if the first never arrived); that answer is as old as the
        first request, so the PaymentIntent it names is then read for its state now.

        Raises:
          ConnectorRefused: no id and no request to replay (nothing to ask Stripe).
          ConnectorError: no definite answer.
        """
        if connector_txn_id is None:
            if request is None:
                raise ConnectorRefused(f"No PaymentIntent id and no request to replay for {payment_id}.",
                                       code="payment_not_found")
            replayed = await self.authorize(request)
            if replayed.connector_txn_id is None:
                return replayed  # a decline whose answer names no PaymentIntent
            connector_txn_id = replayed.connector_txn_id
        pi = await self._call(self._client.v1.payment_intents.retrieve_async(
            connector_txn_id, {"expand": ["payment_method"]}))
        return so.outcome_of_payment_intent(pi)

    # -- refunds --------------------------------------------------------------

    def _refund_params(self, request: RefundRequest) -> dict:
        return so.refund_params(payment_intent=request.connector_txn_id, amount=request.amount,
                                metadata={"refund_id": request.refund_id, "payment_id": request.payment_id,
                                          "merchant_id": request.merchant_id},
                                reason=request.reason)

    async def refund(self, request: RefundRequest) -> Submission:
        refund = await self._call(self._client.v1.refunds.create_async(
            self._refund_params(request), _key(request.idempotency_key)))
        return so.refund_submission(refund)

    async def retrieve_refund(self, request: RefundRequest, reference: str | None) -> Submission:
        """The refund by its Stripe id; without one, found among the PaymentIntent's
        refunds by ``metadata.refund_id``; only when it is not there is the create
        replayed (same key: a create still in flight at Stripe is not doubled)."""
        if reference:
            return so.refund_submission(await self._call(self._client.v1.refunds.retrieve_async(reference)))
        listed = await self._call(self._client.v1.refunds.list_async(
            {"payment_intent": request.connector_txn_id, "limit": 100}))
        found = so.refund_with_metadata(listed.get("data") or [], "refund_id", request.refund_id)
        if found is not None:
            return so.refund_submission(found)
        return await self.refund(request)

    # -- payouts (not Stripe's job here) ---------------------------------------

    async def payout(self, request: PayoutRequest) -> Submission:
        raise ConnectorRefused("Payouts go through the wallet simulators, not Stripe.", code="payouts_unsupported")

    async def retrieve_payout(self, request: PayoutRequest, reference: str | None) -> Submission:
        raise ConnectorRefused("Payouts go through the wallet simulators, not Stripe.", code="payouts_unsupported")

    # -- disputes -------------------------------------------------------------

    async def submit_dispute_evidence(self, connector_dispute_id: str, text: str, *, payment_id: str,
                                      dispute_id: str, amount: int, currency: str) -> None:
        """Update the dispute's evidence and submit it (Stripe then sends it to the bank)."""
        params = {"evidence": {"uncategorized_text": text}, "submit": True,
                  "metadata": {"payment_id": payment_id, "dispute_id": dispute_id}}
        await self._call(self._client.v1.disputes.update_async(
            connector_dispute_id, params, _key(f"{dispute_id}:evidence")))

    async def accept_dispute(self, connector_dispute_id: str) -> None:
        """Close the dispute: Stripe's way of accepting it (the payer keeps the money)."""
        await self._call(self._client.v1.disputes.close_async(
            connector_dispute_id, None, _key(f"{connector_dispute_id}:close")))

    # -- errors ---------------------------------------------------------------

    async def _call(self, awaitable) -> dict:
        """Await one SDK call; its answer as plain dicts, its failure as our typed error.

        Raises:
          _Declined: a card decline (402), turned into an Outcome by ``authorize``.
          ConnectorError: the subclasses documented on ``not_processed_errors``.
        """
        try:
            answer = await awaitable
        except stripe.APIConnectionError as exc:
            raise _network_error(exc) from None
        except stripe.StripeError as exc:
            raise _api_error(exc) from None
        return answer.to_dict() if hasattr(answer, "to_dict") else dict(answer)


class _Declined(ConnectorRefused):
    """A card decline (402): outside ``authorize`` a definite refusal, inside it an Outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message or "The card was declined.", code=outcome.error_code)
        self.outcome = outcome


def _network_error(exc: stripe.APIConnectionError) -> ConnectorError:
    """No HTTP answer: sent or not, from the httpx exception the SDK wrapped."""
    cause = exc.__cause__
    if isinstance(cause, (httpx.ConnectError, httpx.ConnectTimeout)):
        return StripeNotSent("Stripe could not be reached (the connection did not open).")
    if isinstance(cause, httpx.TimeoutException):
        return ConnectorTimeout("Stripe did not answer in time.")
    return ConnectorError(f"The connection to Stripe broke ({type(cause).__name__}); the outcome is unknown.")


def _api_error(exc: stripe.StripeError) -> ConnectorError:
    """An HTTP error answer from Stripe, as the typed error its meaning calls for."""
    body: Any = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    kind = so.classify_error(exc.http_status, error)
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else "Stripe refused the request."
    if kind is so.ErrorClass.DECLINED or (kind is so.ErrorClass.REFUSED and isinstance(error.get("payment_intent"),
                                                                                       dict)):
        return _Declined(so.declined_outcome(error))
    if kind is so.ErrorClass.CREDENTIALS:
        # Stripe's own message quotes (a masked part of) the key: not repeated.
        return CredentialsInvalid("Stripe refused the account's credentials.")
    if kind is so.ErrorClass.REFUSED:
        return ConnectorRefused(f"Stripe: {message}", code=code)
    if kind is so.ErrorClass.RATE_LIMITED:
        return StripeRateLimited(f"Stripe: {message}")
    if kind is so.ErrorClass.IDEMPOTENCY:
        return StripeIdempotencyConflict(f"Stripe: {message}")
    if kind is so.ErrorClass.SERVER:
        return ConnectorServerError(f"Stripe answered {exc.http_status}; the outcome is unknown.")
    return ConnectorError(f"Stripe answered {exc.http_status}: {message}")
