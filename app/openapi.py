"""OpenAPI 3.1, generated from the pydantic models and an operation table.

The table is checked against the live route map by a test, so a route without
documentation fails the suite. Response models list what the contract (docs/api.md) promises;
extra fields are allowed (clients must tolerate additions).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from app import realtime_schemas, schemas
from domain import connector_accounts, urls
from domain.events import EVENT_TYPES
from domain.routing import DEFAULT_CONNECTORS, MAX_WEIGHT

T = TypeVar("T")


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(Out):
    # The contract's error types (docs/api.md "Errors"; domain.errors); `code` says more.
    type: Literal["invalid_request_error", "authentication_error", "not_found", "state_error", "idempotency_error",
                  "rate_limit_error", "api_error"]
    code: str
    message: str
    param: str | None


class Error(Out):
    error: ErrorBody


class Card(Out):
    brand: str | None
    last4: str | None


class PaymentMethodOut(Out):
    type: str
    token: str | None = None  # v1.2: a card token (real connectors)
    card: Card | None = None


class Attempt(Out):
    id: str
    object: Literal["payment_attempt"]
    connector: str
    status: Literal["started", "succeeded", "failed", "unknown", "authorized"]
    connector_txn_id: str | None
    error_code: str | None
    created_at: str


class Payment(Out):
    id: str
    object: Literal["payment"]
    amount: int
    currency: str
    status: Literal["requires_confirmation", "processing", "requires_action", "requires_capture", "succeeded",
                    "failed", "canceled"]
    capture_method: Literal["automatic", "manual"]
    amount_capturable: int
    amount_received: int
    amount_refunded: int
    order_id: str | None
    customer_id: str | None
    connector: str | None
    payment_method: PaymentMethodOut
    last_error: dict | None
    review_required: bool
    next_action: dict | None  # v1.2: set only in requires_action (redirect_to_url or connector_sdk)
    cancellation_reason: str | None  # v1.2: "abandoned" when the action deadline ended it
    metadata: dict[str, str]
    attempts: list[Attempt]
    created_at: str
    updated_at: str


class Order(Out):
    id: str
    object: Literal["order"]
    amount: int
    currency: str
    customer_id: str | None
    status: Literal["created", "paid", "payment_failed", "refunded"]
    payment_ids: list[str]
    metadata: dict[str, str]
    created_at: str
    updated_at: str


class EventData(Out):
    object: dict


class Event(Out):
    id: str
    object: Literal["event"]
    type: str
    seq: int
    created_at: str
    data: EventData


class ListOf(Out, Generic[T]):
    object: Literal["list"]
    data: list[T]
    has_more: bool


class Merchant(Out):
    id: str
    object: Literal["merchant"]
    name: str
    created_at: str


class MerchantCreated(Out):
    merchant: Merchant
    api_key: str


class Connector(Out):
    name: str
    state: Literal["closed", "open", "half_open"]
    success_rate: float
    latency_ms_p50: float | None
    attempts: int
    account_id: str | None = None  # v1.2: a real connector's breaker is its connector account's


class ConnectorAccount(Out):
    """A merchant's gateway account (v1.2); credentials masked, secrets never shown."""

    id: str
    object: Literal["connector_account"]
    connector: Literal["stripe", "razorpay"]
    label: str | None
    status: Literal["active", "disabled"]
    livemode: bool
    credentials: dict[str, str]
    webhook_path: str
    created_at: str
    updated_at: str


def _secret_schema(prefixes: tuple[str, ...] = (), description: str | None = None) -> dict:
    """A credential string as domain.connector_accounts checks it: non-empty, no spaces,
    at most MAX_SECRET_LENGTH characters, starting with one of ``prefixes`` when given."""
    head = f"(?:{'|'.join(prefixes)})" if prefixes else ""
    schema = {"type": "string", "minLength": 1, "maxLength": connector_accounts.MAX_SECRET_LENGTH,
              "pattern": f"^{head}[^\\s\\u0000]+$"}
    return {**schema, "description": description} if description else schema


def _credentials_schema(connector: str) -> dict:
    """The exact credentials object of ``connector`` (its fields, all required, nothing else)."""
    fields = connector_accounts.CREDENTIAL_FIELDS[connector]
    return {"type": "object", "additionalProperties": False, "required": list(fields),
            "properties": {field: _secret_schema(connector_accounts.CREDENTIAL_PREFIXES.get((connector, field), ()))
                           for field in fields}}


_CONNECTOR_ACCOUNT_FIELDS = {
    "webhook_secret": _secret_schema(description="The gateway's signing secret for this account's webhooks."),
    "label": {"type": ["string", "null"], "maxLength": connector_accounts.MAX_LABEL_LENGTH},
}
# One variant per connector, so the document says exactly which credentials each takes
# (stripe: secret_key sk_/rk_…; razorpay: key_id rzp_… and key_secret). Tried against the
# gateway before anything is stored.
CREATE_CONNECTOR_ACCOUNT = {"oneOf": [
    {"type": "object", "additionalProperties": False, "required": ["connector", "credentials", "webhook_secret"],
     "properties": {"connector": {"type": "string", "const": connector},
                    "credentials": _credentials_schema(connector), **_CONNECTOR_ACCOUNT_FIELDS}}
    for connector in sorted(connector_accounts.CREDENTIAL_FIELDS)
]}
# Which credentials an update takes depends on the stored account's connector, which the
# path's id names and no schema can see: the object is described, the server checks it.
UPDATE_CONNECTOR_ACCOUNT = {"type": "object", "additionalProperties": False, "properties": {
    "credentials": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": 'The account\'s connector\'s credentials, as on create (stripe: {"secret_key"}; '
                                   'razorpay: {"key_id", "key_secret"}); tried against the gateway first.'},
    **_CONNECTOR_ACCOUNT_FIELDS}}


class Rule(Out):
    payment_method_type: str
    connectors: list[str]


class Routing(Out):
    strategy: Literal["priority", "volume_split", "success_rate"]
    connectors: list[str]
    weights: dict[str, int] = {}
    rules: list[Rule] = []


# The connectors every process has: gateways.simulated.build_connectors (the routing defaults and
# the flaky one); tests/e2e/test_openapi.py checks this against GET /v1/connectors.
KNOWN_CONNECTORS = (*DEFAULT_CONNECTORS, "flaky")
ConnectorName = Literal[KNOWN_CONNECTORS]


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payment_method_type: str = Field(min_length=1)
    connectors: list[ConnectorName] = Field(min_length=1)


class RoutingIn(BaseModel):
    """PUT replaces the whole policy: strategy and connectors are required (app.routes.connectors)."""
    model_config = ConfigDict(extra="forbid")
    strategy: Literal["priority", "volume_split", "success_rate"]
    connectors: list[ConnectorName] = Field(min_length=1)
    weights: dict[ConnectorName, Annotated[int, Field(ge=0, le=MAX_WEIGHT)]] | None = None
    rules: list[RuleIn] | None = None


class ReconciliationReport(Out):
    id: str
    object: Literal["reconciliation_report"]
    connector: str
    matched: int
    mismatched: list[dict]
    missing_in_paycast: list[str]
    missing_in_report: list[str]
    created_at: str


class Refund(Out):
    id: str
    object: Literal["refund"]
    payment_id: str
    amount: int
    currency: str
    status: Literal["pending", "succeeded", "failed"]
    review_required: bool
    reason: str | None  # duplicate | fraudulent | requested_by_customer, or a gateway's own
    failure_reason: str | None
    connector: str | None
    metadata: dict[str, str]
    created_at: str
    updated_at: str


class DisputeEvidenceOut(Out):
    text: str | None
    submitted_at: str | None


class Dispute(Out):
    id: str
    object: Literal["dispute"]
    payment_id: str
    amount: int
    currency: str
    status: Literal["needs_response", "under_review", "won", "lost", "accepted"]
    reason: str | None
    connector: str | None
    evidence: DisputeEvidenceOut
    created_at: str
    updated_at: str


class Balance(Out):
    object: Literal["balance"]
    data: list[dict]


class Account(Out):
    id: str
    object: Literal["account"]
    customer_id: str
    currency: str
    balance: int
    available_balance: int
    created_at: str


class Transaction(Out):
    id: str
    object: Literal["transaction"]
    account_id: str
    type: Literal["deposit", "withdrawal"]
    status: Literal["pending", "completed", "failed"]
    amount: int
    currency: str
    payment_id: str | None = None
    review_required: bool
    created_at: str


class WebhookEndpoint(Out):
    id: str
    object: Literal["webhook_endpoint"]
    url: str
    enabled_events: list[str]
    description: str | None
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    created_at: str
    updated_at: str
    secret: str | None = None  # on create only (whsec_…): keep it, it is never shown again


class Deleted(Out):
    id: str
    object: str
    deleted: bool


class WebhookAttempt(Out):
    attempt: int
    status_code: int | None
    latency_ms: int
    error: str | None
    created_at: str


class WebhookDelivery(Out):
    id: str
    object: Literal["webhook_delivery"]
    endpoint_id: str
    event_id: str
    event_type: str
    status: Literal["pending", "succeeded", "failed", "canceled"]
    attempt_count: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: str | None
    attempts: list[WebhookAttempt]
    created_at: str
    updated_at: str


class RealtimeToken(Out):
    token: str
    expires_at: str


class Published(Out):
    seq: int
    connections: int


class Presence(Out):
    client_id: str
    devices: list[str]
    connections: int


class Device(Out):
    object: Literal["device"]
    device_id: str
    connections: int
    last_seen_at: str | None
    acked_seq: int


class DeletedDevice(Out):
    object: Literal["device"]
    client_id: str
    device_id: str
    deleted: bool


class WebhookAck(Out):
    received: bool
    duplicate: bool


class Status(Out):
    status: str


class InboxItem(Out):
    id: str
    object: Literal["inbox_item"]
    connector: str
    event_id: str
    event_type: str
    status: Literal["pending", "applied", "ignored", "unmatched", "unhandled", "dead"]
    attempts: int
    last_error: str | None = None
    payment_id: str | None = None
    received_at: str
    processed_at: str | None = None


_TEXT_MEDIA = ("text/plain", "text/html", "text/javascript")  # responses that are not JSON
# Query parameters the handlers refuse to go without (reconciliation reports, search).
_REQUIRED_QUERY = ("connector", "q")
_NO_NUL = "^[^\\u0000]*$"
# domain.settlement.parse_csv: the header row, then rows with a transaction id and an integer amount.
SETTLEMENT_CSV = {"type": "string", "pattern": "^connector_txn_id,amount,currency,status\\r?\\n"
                                               "(?:[A-Za-z0-9_]+,-?[0-9]{1,12},[A-Z]{0,3},[a-z_]*\\r?\\n){0,100}$"}
# str.strip's whitespace (str.isspace), spelled out: ECMA's \\s, which patterns use, differs
# (it has U+FEFF and lacks U+001C-U+001F and U+0085).
_PY_SPACE = "\\t-\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
# Text a handler strips and then requires non-empty, without NUL (refused anywhere in the URL).
NOT_BLANK = f"^[^\\u0000]*[^\\u0000{_PY_SPACE}][^\\u0000]*$"
# app.idempotency: 1 to 255 characters, not all of them blank (str.strip's whitespace).
IDEMPOTENCY_KEY = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": f"[^{_PY_SPACE}]"}

@dataclass(frozen=True)
class Op:
    method: str
    path: str
    summary: str
    responses: dict[int, Any]
    auth: Literal["merchant", "admin", "none", "signature"] = "merchant"
    body: Any = None
    query: tuple[tuple[str, dict], ...] = ()
    body_media: str = "application/json"
    tags: tuple[str, ...] = field(default_factory=tuple)


_PAGE = (("limit", {"type": "integer", "minimum": 1, "maximum": 100}), ("starting_after", {"type": "string"}))
_IDEM = True  # POSTs accept Idempotency-Key (added to every merchant POST below)

OPERATIONS: list[Op] = [
    Op("post", "/admin/merchants", "Create a merchant (admin)", {201: MerchantCreated}, "admin", schemas.CreateMerchant),
    Op("get", "/admin/inbox", "List stored gateway webhooks, newest first (admin)", {200: ListOf[InboxItem]}, "admin",
       query=_PAGE + (("status", {"type": "string", "enum": ["pending", "applied", "ignored", "unmatched",
                                                                  "unhandled", "dead"]}),
                      ("connector", {"type": "string"}))),
    Op("get", "/admin/inbox/{inbox_id}", "Retrieve a stored gateway webhook (admin)", {200: InboxItem}, "admin"),
    Op("post", "/admin/inbox/{inbox_id}/replay", "Replay a stored gateway webhook: back to pending, applied again "
       "(409 if already applied) (admin)", {200: InboxItem}, "admin"),
    Op("post", "/v1/orders", "Create an order", {201: Order}, body=schemas.CreateOrder),
    Op("get", "/v1/orders", "List orders", {200: ListOf[Order]},
       query=_PAGE + (("status", {"type": "string"}), ("customer_id", {"type": "string"}))),
    Op("get", "/v1/orders/{order_id}", "Retrieve an order", {200: Order}),
    Op("post", "/v1/payments", "Create (and optionally confirm) a payment", {201: Payment}, body=schemas.CreatePayment),
    Op("get", "/v1/payments", "List payments", {200: ListOf[Payment]},
       query=_PAGE + (("status", {"type": "string"}), ("order_id", {"type": "string"}),
                      ("customer_id", {"type": "string"}))),
    Op("get", "/v1/payments/{payment_id}", "Retrieve a payment", {200: Payment}),
    Op("post", "/v1/payments/{payment_id}/confirm", "Confirm a payment", {200: Payment},
       body=schemas.ConfirmPayment),
    Op("post", "/v1/payments/{payment_id}/capture", "Capture an authorised payment", {200: Payment},
       body=schemas.CapturePayment),
    Op("post", "/v1/payments/{payment_id}/cancel", "Cancel a payment", {200: Payment}, body=schemas.Empty),
    Op("get", "/v1/events", "List events", {200: ListOf[Event]},
       query=_PAGE + (("type", {"type": "string"}), ("object_id", {"type": "string"}),
                      ("after_seq", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}))),
    Op("get", "/v1/events/{event_id}", "Retrieve an event", {200: Event}),
    Op("get", "/v1/connectors", "Connector health (circuit breakers)", {200: list[Connector]}),
    Op("get", "/v1/routing", "The merchant's routing policy", {200: Routing}),
    Op("put", "/v1/routing", "Replace the routing policy", {200: Routing}, body=RoutingIn),
    Op("post", "/v1/reconciliation/reports", "Compare a settlement CSV", {201: ReconciliationReport},
       query=(("connector", {"type": "string", "enum": list(KNOWN_CONNECTORS)}),), body=SETTLEMENT_CSV,
       body_media="text/csv"),
    Op("post", "/v1/refunds", "Refund a payment (all or part)", {201: Refund}, body=schemas.CreateRefund),
    Op("get", "/v1/refunds", "List refunds", {200: ListOf[Refund]},
       query=_PAGE + (("payment_id", {"type": "string"}), ("status", {"type": "string"}))),
    Op("get", "/v1/refunds/{refund_id}", "Retrieve a refund", {200: Refund}),
    Op("get", "/v1/disputes", "List disputes", {200: ListOf[Dispute]},
       query=_PAGE + (("payment_id", {"type": "string"}), ("status", {"type": "string"}))),
    Op("get", "/v1/disputes/{dispute_id}", "Retrieve a dispute", {200: Dispute}),
    Op("post", "/v1/disputes/{dispute_id}/evidence", "Submit evidence", {200: Dispute}, body=schemas.DisputeEvidence),
    Op("post", "/v1/disputes/{dispute_id}/accept", "Accept (lose) a dispute", {200: Dispute}, body=schemas.Empty),
    Op("get", "/v1/balance", "The merchant's balance view (disputed amounts held)", {200: Balance}),
    Op("post", "/v1/accounts", "Create a wallet account", {201: Account}, body=schemas.CreateAccount),
    Op("get", "/v1/accounts", "List wallet accounts", {200: ListOf[Account]},
       query=_PAGE + (("customer_id", {"type": "string"}),)),
    Op("get", "/v1/accounts/{account_id}", "Retrieve a wallet account", {200: Account}),
    Op("post", "/v1/accounts/{account_id}/deposits", "Deposit through a payment", {201: Transaction},
       body=schemas.CreateDeposit),
    Op("post", "/v1/accounts/{account_id}/withdrawals", "Withdraw through a payout", {201: Transaction},
       body=schemas.CreateWithdrawal),
    Op("get", "/v1/accounts/{account_id}/transactions", "List an account's transactions", {200: ListOf[Transaction]},
       query=_PAGE),
    Op("get", "/v1/transactions/{transaction_id}", "Retrieve a transaction", {200: Transaction}),
    Op("post", "/v1/webhook_endpoints", "Create an outgoing webhook endpoint", {201: WebhookEndpoint},
       body=schemas.CreateWebhookEndpoint),
    Op("get", "/v1/webhook_endpoints", "List webhook endpoints", {200: ListOf[WebhookEndpoint]}, query=_PAGE),
    Op("get", "/v1/webhook_endpoints/{endpoint_id}", "Retrieve a webhook endpoint", {200: WebhookEndpoint}),
    Op("delete", "/v1/webhook_endpoints/{endpoint_id}", "Delete a webhook endpoint", {200: Deleted}),
    Op("get", "/v1/webhook_endpoints/{endpoint_id}/deliveries", "An endpoint's deliveries and their attempts",
       {200: ListOf[WebhookDelivery]}, query=_PAGE + (("status", {"type": "string"}), ("event_id", {"type": "string"}))),
    Op("post", "/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/retry", "Retry a delivery now",
       {200: WebhookDelivery}, body=schemas.Empty),
    Op("post", "/v1/realtime/tokens", "Issue a realtime (WebSocket) token for a client", {201: RealtimeToken},
       body=realtime_schemas.CreateRealtimeToken),
    Op("post", "/v1/realtime/publish", "Publish a message to a client (stored, next seq)", {202: Published},
       body=realtime_schemas.Publish),
    Op("get", "/v1/realtime/clients/{client_id}", "Presence of a client", {200: Presence}),
    Op("get", "/v1/realtime/clients/{client_id}/devices", "A client's devices (connections, acked_seq)",
       {200: ListOf[Device]}),
    Op("delete", "/v1/realtime/clients/{client_id}/devices/{device_id}",
       "Delete a device: close its connections (4001) and refuse its older tokens", {200: DeletedDevice}),
    Op("get", "/dashboard", "Live payments page", {200: {"type": "string"}}, "none", body_media="text/html"),
    Op("post", "/webhooks/{connector}", "Gateway webhook in (signed)", {200: WebhookAck}, "signature",
       body={"type": "object"}),
    Op("post", "/webhooks/{connector}/{mca_id}", "A connector account's gateway webhook in (signed with the "
       "account's webhook secret)", {200: WebhookAck}, "signature", body={"type": "object"}),
    Op("post", "/v1/connector_accounts", "Add a gateway account (credentials tried first; 400 "
       "connector_credentials_invalid, 409 connector_account_exists, 503 connector_unavailable)",
       {201: ConnectorAccount}, body=CREATE_CONNECTOR_ACCOUNT),
    Op("get", "/v1/connector_accounts", "List connector accounts", {200: ListOf[ConnectorAccount]}, query=_PAGE),
    Op("get", "/v1/connector_accounts/{mca_id}", "Retrieve a connector account (masked)",
       {200: ConnectorAccount}),
    Op("post", "/v1/connector_accounts/{mca_id}", "Rotate credentials (tried first), the webhook secret or the "
       "label", {200: ConnectorAccount}, body=UPDATE_CONNECTOR_ACCOUNT),
    Op("delete", "/v1/connector_accounts/{mca_id}", "Disable a connector account (in-flight work still settles)",
       {200: ConnectorAccount}),
    Op("get", "/healthz", "Process alive", {200: Status}, "none"),
    Op("get", "/readyz", "Database reachable and migrations applied", {200: Status}, "none"),
    Op("get", "/metrics", "Prometheus metrics", {200: {"type": "string"}}, "none", body_media="text/plain"),
    Op("get", "/debug/tasks", "The live trio task tree", {200: {"type": "object"}}, "admin"),
    Op("get", "/debug/gc", "The cycle collector's state; ?collect=N runs and times a collection",
       {200: {"type": "object"}}, "admin", query=(("collect", {"type": "string", "enum": ["0", "1", "2"]}),
                                                  ("freeze", {"type": "string", "enum": ["0", "1"]}))),
    Op("get", "/openapi.json", "This document", {200: {"type": "object"}}, "none"),
    Op("get", "/docs", "Browsable API documentation", {200: {"type": "string"}}, "none", body_media="text/html"),
    Op("get", "/static/paycast-realtime.js", "The browser realtime client (ES module; docs/api.md)",
       {200: {"type": "string"}}, "none", body_media="text/javascript"),
    Op("get", "/static/paycast-realtime.d.ts", "TypeScript declarations of the realtime client",
       {200: {"type": "string"}}, "none", body_media="text/plain"),
]



def _schema_ref(model: Any, refs: dict) -> dict:
    if isinstance(model, dict):  # a schema written here (connector accounts, the settlement CSV)
        schema = copy.deepcopy(model)
        _refuse_nul(schema)  # app.body.parse_json refuses NUL anywhere in a JSON body
        return schema
    return refs[model]


def build(extra_ops: list[Op] = ()) -> dict:
    """The OpenAPI 3.1 document of :data:`OPERATIONS` and ``extra_ops`` (the console's,
    :mod:`app.console_openapi`, are given by the ``/openapi.json`` route)."""
    ops = OPERATIONS + list(extra_ops)
    models = set()
    for op in ops:
        for model in list(op.responses.values()) + [op.body, Error]:
            if model is not None and not isinstance(model, dict):
                models.add(model)
    from pydantic import TypeAdapter

    refs: dict = {}
    plain = [m for m in models if isinstance(m, type) and issubclass(m, BaseModel)]
    key_map, defs = models_json_schema([(m, "serialization") for m in plain],
                                       ref_template="#/components/schemas/{model}")
    for m in plain:
        refs[m] = key_map[(m, "serialization")]
    for m in models - set(plain):
        refs[m] = TypeAdapter(m).json_schema(ref_template="#/components/schemas/{model}")
        defs.setdefault("$defs", {}).update(refs[m].pop("$defs", {}))
    paths: dict = {}
    for op in ops:
        entry: dict = {"summary": op.summary, "operationId": f"{op.method}_{op.path}".replace("/", "_").strip("_"),
                       "responses": {}}
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in _path_params(op.path)]
        query = [{"name": n, "in": "query", "required": n in _REQUIRED_QUERY, "schema": dict(s)} for n, s in op.query]
        _refuse_nul(query)  # the server refuses NUL anywhere in the URL (app.asgi_routes, app.server)
        params += query
        if op.method == "post" and op.auth == "merchant":
            params.append({"name": "Idempotency-Key", "in": "header", "required": False, "schema": IDEMPOTENCY_KEY})
        if params:
            entry["parameters"] = params
        if op.body is not None:
            entry["requestBody"] = {"required": op.body_media != "application/json" or op.body is not schemas.Empty,
                                    "content": {op.body_media if op.body_media == "text/csv" else "application/json":
                                                {"schema": _schema_ref(op.body, refs)}}}
        for status, model in op.responses.items():
            media = op.body_media if op.body_media in _TEXT_MEDIA else "application/json"
            entry["responses"][str(status)] = {"description": "OK",
                                               "content": {media: {"schema": _schema_ref(model, refs)}}}
        entry["responses"]["default"] = {"description": "Error (the contract (docs/api.md))",
                                         "content": {"application/json": {"schema": refs[Error]}}}
        if op.auth in ("merchant", "admin"):
            entry["security"] = [{"bearer": []}]
        paths.setdefault(op.path, {})[op.method] = entry
    components = _named(defs.get("$defs", {}), "Currency", schemas.CURRENCY_SCHEMA)
    _add_route_checks(components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Paycast", "version": "1",
                 "description": "Payments, gateway webhooks, reconciliation and realtime events. See the contract (docs/api.md)."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


_REF = "#/components/schemas/"
# Any JSON value without NUL in a string or a key (PostgreSQL's jsonb cannot hold it).
_JSON_VALUE = {"anyOf": [
    {"type": "string", "pattern": _NO_NUL}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
    {"type": "array", "items": {"$ref": f"{_REF}JsonValue"}},
    {"type": "object", "propertyNames": {"pattern": _NO_NUL}, "additionalProperties": {"$ref": f"{_REF}JsonValue"}},
]}


def _add_route_checks(defs: dict) -> None:
    """Say in the request schemas what route handlers check beyond the body models, so data
    the document calls valid is never refused with 400 (schemathesis checks it):

    - a card payment method needs ``card``, a UPI one ``upi`` (app.routes.payments.stored_method);
    - ``connector`` on a payment names a known connector;
    - a webhook endpoint's ``url`` is an absolute http(s) URL without credentials and its
      ``enabled_events`` are event types or ``"*"`` (domain.outgoing_webhooks);
    - no string holds NUL (app.body.parse_json refuses it anywhere in a body).
    """
    for schema in defs.values():
        if schema.get("additionalProperties") is False:  # the request models (schemas.Strict)
            _refuse_nul(schema)
    method = defs.get("PaymentMethod")
    if method is not None:
        method["allOf"] = [{"if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
                            "then": _details_required(method, kind, model)}
                           for kind, model in (("card", "CardDetails"), ("upi", "UpiDetails"))]
    if method is not None and "token" in method.get("properties", {}):
        # A token stands for a card: type card, no card details (app.routes.payments.stored_method).
        method["allOf"].append({"if": {"properties": {"token": {"type": "string"}}, "required": ["token"]},
                                "then": {"properties": {"type": {"const": "card"}, "card": {"type": "null"}}}})
    for name in ("CreatePayment", "ConfirmPayment"):
        url = defs.get(name, {}).get("properties", {}).get("return_url")
        if url is not None:  # schemas._return_url_ok
            _string_of(url)["pattern"] = urls.HTTP_URL
    payment = defs.get("CreatePayment")
    if payment is not None and "return_url" in payment["properties"]:
        # return_url only with confirm: true (it is where the customer comes back after acting).
        payment.setdefault("allOf", []).append({
            "if": {"properties": {"return_url": {"type": "string"}}, "required": ["return_url"]},
            "then": {"properties": {"confirm": {"const": True}}, "required": ["confirm"]}})
    if payment is not None:
        payment["properties"]["connector"] = {"anyOf": [{"type": "string", "enum": list(KNOWN_CONNECTORS)},
                                                        {"type": "null"}], "default": None}
    event = defs.get("PublishedEvent")
    if event is not None and "data" in event["properties"]:
        # A published event's data is any JSON without NUL (app.body.parse_json): said recursively.
        defs["JsonValue"] = _JSON_VALUE
        event["properties"]["data"] = {"$ref": f"{_REF}JsonValue", "default": None, "title": "Data"}
    endpoint = defs.get("CreateWebhookEndpoint")
    if endpoint is not None:
        endpoint["properties"]["url"].update({"format": "uri", "pattern": urls.HTTP_URL})
        endpoint["properties"]["enabled_events"]["items"] = {"type": "string",
                                                             "enum": ["*", *sorted(EVENT_TYPES)]}


def _string_of(schema: dict) -> dict:
    """The string branch of an optional string's schema (``anyOf: [string, null]``), or itself."""
    return next((branch for branch in schema.get("anyOf", ()) if branch.get("type") == "string"), schema)


def _details_required(method: dict, kind: str, model: str) -> dict:
    """``kind``'s details are required (not null); a card may instead be a gateway ``token``
    when the payment method schema has one (docs/api.md v1.2 token payment methods)."""
    details = {"required": [kind], "properties": {kind: {"$ref": f"{_REF}{model}"}}}
    if kind == "card" and "token" in method.get("properties", {}):
        return {"anyOf": [details, {"required": ["token"]}]}
    return details


def _named(defs: dict, name: str, schema: dict) -> dict:
    """``defs`` with every inline copy of ``schema`` replaced by a reference to ``defs[name]``."""

    def swap(node: Any) -> Any:
        if node == schema:
            return {"$ref": f"{_REF}{name}"}
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    return {**{k: swap(v) for k, v in defs.items()}, name: dict(schema)}


def _refuse_nul(node: Any) -> None:
    """Add a NUL-free pattern to every string (and map key) schema under ``node`` that has none."""
    if isinstance(node, dict):
        kinds = node.get("type")
        if (kinds == "string" or isinstance(kinds, list) and "string" in kinds) \
                and not {"enum", "const", "pattern"} & node.keys():
            node["pattern"] = _NO_NUL
        if isinstance(node.get("additionalProperties"), dict):
            node.setdefault("propertyNames", {}).setdefault("pattern", _NO_NUL)
        for value in node.values():
            _refuse_nul(value)
    elif isinstance(node, list):
        for value in node:
            _refuse_nul(value)


def _path_params(path: str) -> list[str]:
    import re

    return re.findall(r"{([^}]+)}", path)


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Paycast API</title>
<style>
 body{font:14px/1.5 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
 h1{margin-bottom:0} .op{border:1px solid #ddd;border-radius:6px;margin:.6em 0;padding:.5em .8em}
 .m{display:inline-block;min-width:4.5em;font-weight:600;text-transform:uppercase}
 .get{color:#0a7} .post{color:#06c} .put{color:#a60} .delete{color:#c33}
 code{background:#f4f4f4;padding:0 .3em;border-radius:3px} details pre{background:#f8f8f8;padding:.5em;overflow:auto}
</style></head><body>
<h1>Paycast API</h1><p>Generated from <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).
Authenticate with <code>Authorization: Bearer sk_test_…</code>.</p><div id="ops">Loading…</div>
<script>
fetch('/openapi.json').then(r => r.json()).then(spec => {
  const root = document.getElementById('ops'); root.textContent = '';
  for (const [path, ops] of Object.entries(spec.paths)) for (const [method, op] of Object.entries(ops)) {
    const div = document.createElement('div'); div.className = 'op';
    const body = op.requestBody ? JSON.stringify(op.requestBody.content, null, 2) : '';
    const ok = Object.entries(op.responses).filter(([s]) => s !== 'default').map(([s]) => s).join(', ');
    div.innerHTML = `<span class="m ${method}">${method}</span> <code>${path}</code> — ${op.summary}
      <small>(${ok})</small>` + (body ? `<details><summary>request body</summary><pre></pre></details>` : '');
    if (body) div.querySelector('pre').textContent = body;
    root.appendChild(div);
  }
});
</script></body></html>"""
