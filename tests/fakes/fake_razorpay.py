"""A fake Razorpay API server, written for Paycast's tests.

No public stand-in for Razorpay exists (nothing like localstripe), so this
one was written from Razorpay's **documented** request and response shapes
(https://razorpay.com/docs/api/: Orders, Payments, Refunds, Disputes,
Errors; https://razorpay.com/docs/webhooks/: payloads and the
``X-Razorpay-Signature`` / ``x-razorpay-event-id`` headers). It was not
checked against Razorpay's servers: what it answers is what the documents
say, no more (the live suite, ``tests/live/test_razorpay_live.py``, is the
check against the real thing).

It is a real HTTP server on a free port (``http.server`` in a thread of the
test process), with Basic authentication per account, and it plays
**Checkout**: a test "pays" an order (:meth:`FakeRazorpay.pay`: success, or a
failure, then maybe a success on the same order) and the fake sends the
webhooks Razorpay would send, signed as Razorpay signs them, to the URL set
with :meth:`FakeRazorpay.add_account`.

What it serves (every path under ``/v1``):

* ``POST /orders``, ``GET /orders?receipt=&count=&skip=``, ``GET /orders/{id}``,
  ``GET /orders/{id}/payments``;
* ``GET /payments/{id}`` (the ``card`` object only with ``expand[]=card``, as
  in lists, which show ``card_id`` alone), ``POST /payments/{id}/capture`` (whole amount
  only), ``POST /payments/{id}/refund``, ``GET /payments/{id}/refunds``,
  ``GET /refunds/{id}``;
* ``GET /disputes/{id}``, ``POST /disputes/{id}/accept``,
  ``PATCH /disputes/{id}/contest``;
* errors in Razorpay's shape ``{"error": {"code", "description", "source",
  "step", "reason", "metadata", "field"?}}``: 401 for a wrong key, 400
  ``BAD_REQUEST_ERROR`` for bad input or unknown ids;
* injected faults (:meth:`FakeRazorpay.fault`): a 5xx before processing, a
  hang before processing, or a hang *after* processing (the request took
  effect but its answer never comes: what an idempotency-key-less client must
  survive).

Every request is recorded (:attr:`FakeRazorpay.requests`, :meth:`count`) so a
test can say what reached "Razorpay" and how many times.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import re
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx

_ALNUM = string.ascii_letters + string.digits
MIN_AMOUNT = 100  # Razorpay: "The amount must be at least INR 1.00"


def rzp_id(prefix: str) -> str:
    """A Razorpay-looking id: prefix + 14 base62 characters (``order_DaaS6LOUAASb7Y``)."""
    return f"{prefix}_" + "".join(secrets.choice(_ALNUM) for _ in range(14))


def sign(secret: str, raw: bytes) -> str:
    """Razorpay's webhook signature: hex HMAC-SHA256 of the raw body, keyed with the webhook secret."""
    return hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


class RazorpayError(Exception):
    """An error answer in Razorpay's documented shape."""

    def __init__(self, status: int, description: str, *, code: str = "BAD_REQUEST_ERROR",
                 reason: str = "input_validation_failed", field_name: str | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.body = {"error": {"code": code, "description": description, "source": "business",
                               "step": "payment_initiation", "reason": reason, "metadata": {}}}
        if field_name:
            self.body["error"]["field"] = field_name


def _unknown_id() -> RazorpayError:
    return RazorpayError(400, "The id provided does not exist")


@dataclass
class Account:
    key_id: str
    key_secret: str
    account_id: str
    webhook_url: str | None = None
    webhook_secret: str | None = None


@dataclass
class Fault:
    method: str
    pattern: re.Pattern
    kind: str  # "server_error" | "timeout" | "timeout_after"
    times: int


@dataclass
class Delivery:
    """One webhook sent (or, with ``deliver_webhooks`` off, lost)."""

    key_id: str
    event: str
    event_id: str
    status: int | None = None  # our server's answer; None: not sent or no answer
    raw: bytes = field(repr=False, default=b"")


class FakeRazorpay:
    """The fake server and its state (thread-safe: handler threads and the test share it).

    Args:
      hang_s: how long an injected timeout hangs (longer than the client's timeout).
      refund_status: what a new refund is: ``processed`` (test mode's usual
        answer) or ``pending`` (then :meth:`settle_refund` decides).
      webhook_delay_s: refund webhooks follow their create after this long
        (from a timer thread), as Razorpay's do.
    """

    def __init__(self, *, hang_s: float = 30.0, refund_status: str = "processed",
                 webhook_delay_s: float = 0.2) -> None:
        self.hang_s = hang_s
        self.refund_status = refund_status
        self.webhook_delay_s = webhook_delay_s
        self.accounts: dict[str, Account] = {}
        self.orders: dict[str, dict] = {}
        self.payments: dict[str, dict] = {}
        self.refunds: dict[str, dict] = {}
        self.disputes: dict[str, dict] = {}
        self.owner: dict[str, str] = {}  # entity id → key_id of the account that made it
        self.requests: list[tuple[str, str, dict | None]] = []
        self.deliveries: list[Delivery] = []
        self.deliver_webhooks = True  # False: webhooks are "lost" (recorded, not sent)
        self.hold_webhooks = False  # True: kept back until release() (to reorder or duplicate them)
        self._held: list[Delivery] = []
        self._faults: list[Fault] = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._timers: list[threading.Timer] = []
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._http = httpx.Client(timeout=10)
        self.url = ""

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> "FakeRazorpay":
        """Listen on a free port of 127.0.0.1 (``self.url``), serving from a daemon thread."""
        fake = self

        class Handler(_Handler):
            state = fake

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-razorpay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for timer in self._timers:
            timer.cancel()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._http.close()

    def __enter__(self) -> "FakeRazorpay":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- test controls ------------------------------------------------------

    def add_account(self, key_id: str | None = None, key_secret: str | None = None, *,
                    webhook_url: str | None = None, webhook_secret: str | None = None) -> Account:
        """A Razorpay account with API keys (``rzp_test_…`` unless given) and where its webhooks go."""
        account = Account(key_id or "rzp_test_" + "".join(secrets.choice(_ALNUM) for _ in range(14)),
                          key_secret or secrets.token_urlsafe(18), rzp_id("acc"), webhook_url, webhook_secret)
        with self._lock:
            self.accounts[account.key_id] = account
        return account

    def fault(self, method: str, path_regex: str, kind: str = "server_error", times: int = 1) -> None:
        """Make the next ``times`` matching requests fail.

        Args:
          method: HTTP method.
          path_regex: matched (``re.fullmatch``) against the path, e.g. ``r"/v1/payments/\\w+/refund"``.
          kind: ``server_error`` (500, nothing done), ``timeout`` (hang, nothing
            done) or ``timeout_after`` (done, then hang: the answer is lost).
        """
        with self._lock:
            self._faults.append(Fault(method, re.compile(path_regex), kind, times))

    def count(self, method: str, path_regex: str) -> int:
        """How many requests reached the fake for ``method`` and a path matching ``path_regex``."""
        pattern = re.compile(path_regex)
        with self._lock:
            return sum(1 for m, p, _ in self.requests if m == method and pattern.fullmatch(p))

    def pay(self, order_id: str, *, succeed: bool = True, method: str = "card",
            error_code: str = "BAD_REQUEST_ERROR", error_description: str = "Payment failed") -> dict:
        """Play Checkout: the customer pays the order once.

        A success authorises a payment (``payment.authorized``) and, when the
        order was created with ``payment_capture``, captures it
        (``payment.captured`` then ``order.paid``). A failure makes a failed
        payment (``payment.failed``); the order stays payable.

        Returns:
          The payment entity.
        """
        with self._lock:
            order = self.orders[order_id]
            payment = {
                "id": rzp_id("pay"), "entity": "payment", "amount": order["amount"], "currency": order["currency"],
                "status": "created", "order_id": order_id, "invoice_id": None, "international": False,
                "method": method, "amount_refunded": 0, "refund_status": None, "captured": False,
                "description": None, "card_id": None, "card": None, "bank": None, "wallet": None, "vpa": None,
                "email": "gaurav.kumar@example.com", "contact": "+919000090000", "notes": [],
                "fee": None, "tax": None, "error_code": None, "error_description": None, "error_source": None,
                "error_step": None, "error_reason": None, "acquirer_data": {}, "created_at": int(time.time())}
            if method == "card":
                payment["card_id"] = rzp_id("card")
                payment["card"] = {"id": payment["card_id"], "entity": "card", "name": "Gaurav Kumar",
                                   "last4": "1111", "network": "Visa", "type": "debit", "issuer": None,
                                   "international": False, "emi": False, "sub_type": "consumer"}
            elif method == "upi":
                payment["vpa"] = "success@razorpay" if succeed else "failure@razorpay"
            self.payments[payment["id"]] = payment
            self.owner[payment["id"]] = self.owner[order_id]
            order["attempts"] += 1
            order["status"] = "attempted"
            if not succeed:
                payment.update(status="failed", error_code=error_code, error_description=error_description,
                               error_source="customer", error_step="payment_authorization",
                               error_reason="payment_failed")
                events = [("payment.failed", {"payment": payment})]
            else:
                payment["status"] = "authorized"
                events = [("payment.authorized", {"payment": payment})]
                if order["payment_capture"]:
                    events += self._capture(payment)
            snapshot = [(name, _copy(payload)) for name, payload in events]
        for name, payload in snapshot:
            self._send(self.owner[order_id], name, payload)
        return _copy(payment)

    def open_dispute(self, order_id: str, amount: int | None = None) -> dict:
        """The customer's bank disputes the order's captured payment (``payment.dispute.created``)."""
        with self._lock:
            payment = next(p for p in self.payments.values() if p["order_id"] == order_id and p["captured"])
            dispute = {"id": rzp_id("disp"), "entity": "dispute", "payment_id": payment["id"],
                       "amount": amount or payment["amount"], "currency": payment["currency"],
                       "amount_deducted": 0, "reason_code": "chargeback",
                       "reason_description": "The customer does not recognise the payment.",
                       "respond_by": int(time.time()) + 7 * 86400, "status": "open", "phase": "chargeback",
                       "created_at": int(time.time()), "evidence": None}
            self.disputes[dispute["id"]] = dispute
            self.owner[dispute["id"]] = self.owner[order_id]
            payload = _copy({"payment": payment, "dispute": dispute})
        self._send(self.owner[order_id], "payment.dispute.created", payload)
        return _copy(dispute)

    def close_dispute(self, dispute_id: str, verdict: str) -> None:
        """The bank decides: ``won`` or ``lost`` (``payment.dispute.won|lost``)."""
        with self._lock:
            dispute = self.disputes[dispute_id]
            dispute["status"] = verdict
            if verdict == "lost":
                dispute["amount_deducted"] = dispute["amount"]
            payload = _copy({"payment": self.payments[dispute["payment_id"]], "dispute": dispute})
        self._send(self.owner[dispute_id], f"payment.dispute.{verdict}", payload)

    def settle_refund(self, refund_id: str, status: str = "processed") -> None:
        """A pending refund ends ``processed`` or ``failed`` (``refund.processed|failed``)."""
        with self._lock:
            refund = self.refunds[refund_id]
            refund["status"] = status
            payment = self.payments[refund["payment_id"]]
            if status == "failed":
                self._refunded(payment, -refund["amount"])
            payload = _copy({"refund": refund, "payment": payment})
        self._send(self.owner[refund_id], f"refund.{status}", payload)

    def release(self, *, reverse: bool = False, duplicate: bool = False, lose=None) -> list[int | None]:
        """Send the webhooks kept back while ``hold_webhooks`` was on.

        Args:
          reverse: newest first (out of order, as Razorpay's retries can be).
          duplicate: each one twice (a redelivery after a lost 2xx).
          lose: ``lose(delivery) -> bool``: those are never sent (lost on the way).

        Returns:
          Our server's answers, in sending order.
        """
        with self._lock:
            held, self._held = self._held, []
        if reverse:
            held.reverse()
        if lose is not None:
            held = [d for d in held if not lose(d)]
        answers = []
        for delivery in held:
            for _ in range(2 if duplicate else 1):
                answers.append(self._post(self.accounts[delivery.key_id], delivery.event, delivery.event_id,
                                          delivery.raw))
        return answers

    def redeliver(self, event_id: str) -> int | None:
        """Send a delivered webhook again, byte for byte (Razorpay retries until it gets a 2xx)."""
        sent = next(d for d in self.deliveries if d.event_id == event_id)
        return self._post(self.accounts[sent.key_id], sent.event, event_id, sent.raw)

    # -- internals (lock held by callers that touch state) -----------------

    def _capture(self, payment: dict) -> list[tuple[str, dict]]:
        order = self.orders[payment["order_id"]]
        payment.update(status="captured", captured=True, fee=round(payment["amount"] * 0.02), tax=0)
        order.update(status="paid", amount_paid=order["amount"], amount_due=0)
        return [("payment.captured", {"payment": payment}), ("order.paid", {"payment": payment, "order": order})]

    @staticmethod
    def _refunded(payment: dict, delta: int) -> None:
        """Move ``amount_refunded`` by ``delta`` (a refund made, or a failed one given back)
        and the payment's ``status``/``refund_status`` with it, as Razorpay shows them."""
        payment["amount_refunded"] += delta
        full = payment["amount_refunded"] == payment["amount"]
        payment["status"] = "refunded" if full else "captured"
        payment["refund_status"] = None if not payment["amount_refunded"] else ("full" if full else "partial")

    def _send(self, key_id: str, event: str, payload: dict) -> None:
        account = self.accounts[key_id]
        body = {"entity": "event", "account_id": account.account_id, "event": event,
                "contains": list(payload), "payload": {k: {"entity": v} for k, v in payload.items()},
                "created_at": int(time.time())}
        raw = json.dumps(body, separators=(",", ":")).encode()
        event_id = "".join(secrets.choice(_ALNUM) for _ in range(14))
        if self.hold_webhooks:
            with self._lock:
                self._held.append(Delivery(key_id, event, event_id, None, raw))
            return
        self._post(account, event, event_id, raw)

    def _post(self, account: Account, event: str, event_id: str, raw: bytes) -> int | None:
        delivery = Delivery(account.key_id, event, event_id, None, raw)
        signature = sign(account.webhook_secret or "", raw)
        if self.deliver_webhooks and account.webhook_url and not self._stopping.is_set():
            try:
                delivery.status = self._http.post(account.webhook_url, content=raw, headers={
                    "Content-Type": "application/json", "X-Razorpay-Signature": signature,
                    "x-razorpay-event-id": event_id, "User-Agent": "Razorpay-Webhook/v1"}).status_code
            except httpx.HTTPError:
                delivery.status = None
        with self._lock:
            self.deliveries.append(delivery)
        return delivery.status

    def _later(self, key_id: str, event: str, payload: dict) -> None:
        timer = threading.Timer(self.webhook_delay_s, self._send, (key_id, event, payload))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _fault_for(self, method: str, path: str) -> str | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method and fault.times > 0 and fault.pattern.fullmatch(path):
                    fault.times -= 1
                    return fault.kind
        return None

    def _hang(self) -> None:
        self._stopping.wait(self.hang_s)

    # -- the API --------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict, body: dict | None, key_id: str) -> tuple[int, dict]:
        """Route one authenticated request; returns (status, JSON body)."""
        routes = [
            ("POST", r"/v1/orders", self._create_order),
            ("GET", r"/v1/orders", self._list_orders),
            ("GET", r"/v1/orders/(\w+)", self._get_order),
            ("GET", r"/v1/orders/(\w+)/payments", self._order_payments),
            ("GET", r"/v1/payments/(\w+)", self._get_payment),
            ("POST", r"/v1/payments/(\w+)/capture", self._capture_payment),
            ("POST", r"/v1/payments/(\w+)/refund", self._create_refund),
            ("GET", r"/v1/payments/(\w+)/refunds", self._payment_refunds),
            ("GET", r"/v1/refunds/(\w+)", self._get_refund),
            ("GET", r"/v1/disputes/(\w+)", self._get_dispute),
            ("POST", r"/v1/disputes/(\w+)/accept", self._accept_dispute),
            ("PATCH", r"/v1/disputes/(\w+)/contest", self._contest_dispute),
        ]
        for verb, pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                with self._lock:
                    return 200, action(key_id, query, body or {}, *match.groups())
        raise RazorpayError(400, "The requested URL was not found on the server.", reason="NA")

    def _mine(self, store: dict, key_id: str, entity_id: str) -> dict:
        if entity_id not in store or self.owner.get(entity_id) != key_id:
            raise _unknown_id()
        return store[entity_id]

    def _create_order(self, key_id, query, body) -> dict:
        amount, currency = body.get("amount"), body.get("currency")
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise RazorpayError(400, "The amount must be an integer.", field_name="amount")
        if amount < MIN_AMOUNT:
            raise RazorpayError(400, f"The amount must be at least {currency or 'INR'} 1.00", field_name="amount")
        if not isinstance(currency, str) or len(currency) != 3:
            raise RazorpayError(400, "The currency field is required.", field_name="currency")
        receipt = body.get("receipt")
        if receipt is not None and (not isinstance(receipt, str) or len(receipt) > 40):
            raise RazorpayError(400, "The receipt may not be greater than 40 characters.", field_name="receipt")
        notes = body.get("notes") or {}
        if not isinstance(notes, dict) or len(notes) > 15 or any(len(str(v)) > 256 for v in notes.values()):
            raise RazorpayError(400, "notes: at most 15 keys of 256 characters each.", field_name="notes")
        order = {"id": rzp_id("order"), "entity": "order", "amount": amount, "amount_paid": 0,
                 "amount_due": amount, "currency": currency, "receipt": receipt, "offer_id": None,
                 "status": "created", "attempts": 0, "notes": notes or [], "created_at": int(time.time()),
                 # Kept by the fake to play Checkout; Razorpay does not echo it in the entity.
                 "payment_capture": body.get("payment_capture") in (True, 1, "1", "true")}
        self.orders[order["id"]] = order
        self.owner[order["id"]] = key_id
        return _public(order)

    def _list_orders(self, key_id, query, body) -> dict:
        items = [o for o in self.orders.values() if self.owner[o["id"]] == key_id
                 and ("receipt" not in query or o["receipt"] == query["receipt"])]
        return _collection(sorted(items, key=lambda o: o["created_at"], reverse=True), query, _public)

    def _get_order(self, key_id, query, body, order_id) -> dict:
        return _public(self._mine(self.orders, key_id, order_id))

    def _order_payments(self, key_id, query, body, order_id) -> dict:
        self._mine(self.orders, key_id, order_id)
        return _collection([p for p in self.payments.values() if p["order_id"] == order_id], query, _unexpanded)

    def _get_payment(self, key_id, query, body, payment_id) -> dict:
        payment = self._mine(self.payments, key_id, payment_id)
        return payment if query.get("expand[]") == "card" else _unexpanded(payment)

    def _capture_payment(self, key_id, query, body, payment_id) -> dict:
        payment = self._mine(self.payments, key_id, payment_id)
        if payment["status"] != "authorized":
            raise RazorpayError(400, "This payment has already been captured" if payment["captured"] else
                                "Only payments which have been authorized and not yet captured can be captured")
        if body.get("amount") != payment["amount"]:
            raise RazorpayError(400, "Capture amount must be equal to the amount authorized", field_name="amount")
        if body.get("currency") != payment["currency"]:
            raise RazorpayError(400, "The currency should be same as the payment currency", field_name="currency")
        events = self._capture(payment)
        key = self.owner[payment_id]
        snapshot = [(name, _copy(payload)) for name, payload in events]
        for name, payload in snapshot:
            self._later(key, name, payload)
        return payment

    def _create_refund(self, key_id, query, body, payment_id) -> dict:
        payment = self._mine(self.payments, key_id, payment_id)
        if not payment["captured"]:
            raise RazorpayError(400, "The payment has not been captured yet.")
        left = payment["amount"] - payment["amount_refunded"]
        amount = body.get("amount", left)
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 100:
            raise RazorpayError(400, "The amount must be at least INR 1.00", field_name="amount")
        if amount > left:
            raise RazorpayError(400, "The refund amount provided is greater than amount captured",
                                field_name="amount")
        refund = {"id": rzp_id("rfnd"), "entity": "refund", "amount": amount, "currency": payment["currency"],
                  "payment_id": payment_id, "notes": body.get("notes") or [], "receipt": body.get("receipt"),
                  "acquirer_data": {"arn": None}, "created_at": int(time.time()), "batch_id": None,
                  "status": self.refund_status, "speed_processed": "normal",
                  "speed_requested": body.get("speed", "normal")}
        self.refunds[refund["id"]] = refund
        self.owner[refund["id"]] = key_id
        self._refunded(payment, amount)
        self._later(key_id, "refund.created", _copy({"refund": refund, "payment": payment}))
        if refund["status"] == "processed":
            self._later(key_id, "refund.processed", _copy({"refund": refund, "payment": payment}))
        return refund

    def _payment_refunds(self, key_id, query, body, payment_id) -> dict:
        self._mine(self.payments, key_id, payment_id)
        return _collection([r for r in self.refunds.values() if r["payment_id"] == payment_id], query)

    def _get_refund(self, key_id, query, body, refund_id) -> dict:
        return self._mine(self.refunds, key_id, refund_id)

    def _get_dispute(self, key_id, query, body, dispute_id) -> dict:
        return self._mine(self.disputes, key_id, dispute_id)

    def _accept_dispute(self, key_id, query, body, dispute_id) -> dict:
        dispute = self._mine(self.disputes, key_id, dispute_id)
        if dispute["status"] not in ("open", "under_review"):
            raise RazorpayError(400, "The dispute cannot be accepted in its current state.")
        dispute.update(status="lost", amount_deducted=dispute["amount"])
        self._later(key_id, "payment.dispute.lost",
                    _copy({"payment": self.payments[dispute["payment_id"]], "dispute": dispute}))
        return dispute

    def _contest_dispute(self, key_id, query, body, dispute_id) -> dict:
        dispute = self._mine(self.disputes, key_id, dispute_id)
        if dispute["status"] != "open":
            raise RazorpayError(400, "The dispute cannot be contested in its current state.")
        if body.get("action") not in ("draft", "submit"):
            raise RazorpayError(400, "The action field is invalid.", field_name="action")
        dispute["evidence"] = {"amount": body.get("amount", dispute["amount"]), "summary": body.get("summary"),
                               "submitted_at": int(time.time()) if body["action"] == "submit" else None}
        if body["action"] == "submit":
            dispute["status"] = "under_review"
            self._later(key_id, "payment.dispute.under_review",
                        _copy({"payment": self.payments[dispute["payment_id"]], "dispute": dispute}))
        return dispute


def _copy(value):
    return json.loads(json.dumps(value))


def _unexpanded(payment: dict) -> dict:
    """A payment as the API shows it by default: ``card_id`` only; the ``card`` object
    comes with ``expand[]=card`` (and in webhooks)."""
    return {k: v for k, v in payment.items() if k != "card"}


def _public(order: dict) -> dict:
    return {k: v for k, v in order.items() if k != "payment_capture"}


def _collection(items: list[dict], query: dict, shape=lambda x: x) -> dict:
    skip = int(query.get("skip", 0))
    count = min(int(query.get("count", 10)), 100)
    page = [shape(i) for i in items[skip:skip + count]]
    return {"entity": "collection", "count": len(page), "items": _copy(page)}


class _Handler(http.server.BaseHTTPRequestHandler):
    """HTTP edge of the fake: Basic auth, JSON in and out, injected faults."""

    state: FakeRazorpay
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: the test output is the tests'
        pass

    def _answer(self, status: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _key(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            key_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        account = self.state.accounts.get(key_id)
        return key_id if account is not None and hmac.compare_digest(account.key_secret, secret) else None

    def _serve(self) -> None:
        fake = self.state
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with fake._lock:
            fake.requests.append((self.command, parts.path, body))
        key_id = self._key()
        if key_id is None:
            self._answer(401, {"error": {"code": "BAD_REQUEST_ERROR", "description": "The api key provided is invalid",
                                         "source": "NA", "step": "NA", "reason": "NA", "metadata": {}}})
            return
        fault = fake._fault_for(self.command, parts.path)
        if fault == "server_error":
            self._answer(500, {"error": {"code": "SERVER_ERROR", "description": "The server encountered an error. "
                                         "The incident has been reported to admins.", "source": "NA", "step": "NA",
                                         "reason": "NA", "metadata": {}}})
            return
        if fault == "timeout":
            fake._hang()
            return
        try:
            status, answer = fake.handle(self.command, parts.path, query, body, key_id)
        except RazorpayError as exc:
            status, answer = exc.status, exc.body
        if fault == "timeout_after":
            fake._hang()
            return
        self._answer(status, answer)

    do_GET = do_POST = do_PATCH = _serve
