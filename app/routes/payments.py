"""``/v1/payments``: create (optionally confirming), confirm, capture, cancel, read."""

from __future__ import annotations

from quart import Blueprint, g

from actors.payment_messages import Cancel, Capture, Confirm
from app.auth import merchant_required
from app.body import Reply, json_reply, json_response, page_params, validated
from app.context import components
from app.merchant_posts import quart_post
from app.schemas import CapturePayment, ConfirmPayment, CreatePayment, Empty, PaymentMethod
from components import Components
from domain import cards, render
from domain.errors import InvalidRequest
from domain.routing import REAL_CONNECTORS, accepts, method_kind

bp = Blueprint("payments", __name__)


def stored_method(method: PaymentMethod, pinned: str | None = None, *, checkout_ok: bool = False) -> dict:
    """The payment method as it may be stored: a card is truncated to first 6 + last 4,
    a token kept as it is, a card or UPI without details (a gateway's checkout
    collects them) kept as its type alone.

    Args:
      pinned: the connector the payment is pinned to, if any.
      checkout_ok: a card or UPI without details may go unpinned (the caller
        checks that routing offers it to a gateway that collects them).

    Raises:
      InvalidRequest: the details are invalid, missing for where the payment
        goes, or a raw card number for a real connector
        (``raw_card_data_not_allowed``: nothing is stored, nothing sent).
    """
    out: dict = {"type": method.type}
    if method.token is not None:
        if method.type != "card" or method.card is not None:
            raise InvalidRequest("A token stands for the card: give payment_method.type 'card' and no card details.",
                                 param="payment_method.token")
        out["token"] = cards.validate_token(method.token)
        return out
    real = pinned in REAL_CONNECTORS
    if method.type == "card" and method.card is not None:
        if real:
            raise InvalidRequest(f"A card number may not be sent to {pinned}: use a token "
                                 "(payment_method.token) from the gateway's own card form.",
                                 param="payment_method.card.number", code="raw_card_data_not_allowed")
        out["card"] = cards.truncate(method.card.number)
    elif method.type == "upi" and method.upi is not None:
        out["upi"] = {"vpa": method.upi.vpa}
    elif method.type in ("card", "upi"):
        if not real and (pinned is not None or not checkout_ok):
            raise _missing_details(out)
    else:
        details = getattr(method, method.type)
        if details:
            out[method.type] = details
    return out


def _missing_details(method: dict) -> InvalidRequest:
    """The 400 for a card or UPI without details that no connector could take."""
    field = "card.number" if method["type"] == "card" else "upi.vpa"
    return InvalidRequest(f"A {method['type']} payment needs payment_method.{field} (or payment_method.token), "
                          "unless it goes to a gateway whose checkout collects it.",
                          param=f"payment_method.{field}", code="parameter_missing")


async def create(components_: Components, merchant_id: str, raw: bytes) -> Reply:
    """``POST /v1/payments``: a payment, confirmed at once with ``confirm: true`` (a hot POST,
    :mod:`app.merchant_posts`)."""
    body = validated(CreatePayment, raw)
    payments_ = components_.payments
    if body.connector is not None and body.connector not in payments_.routing.known_connectors:
        raise InvalidRequest(f"Unknown connector {body.connector!r}.", param="connector")
    if body.return_url is not None and not body.confirm:
        raise InvalidRequest("return_url is given with confirm: true (or on /confirm).", param="return_url")
    spec = body.model_dump(exclude={"confirm", "payment_method"})
    spec["payment_method"] = method = stored_method(body.payment_method, body.connector, checkout_ok=True)
    if method.get("token"):
        # A token is a Stripe PaymentMethod: it pins the payment to stripe.
        if body.connector not in (None, "stripe"):
            raise InvalidRequest(f"A card token can be charged only through stripe, not {body.connector}.",
                                 param="connector")
        spec["connector"] = "stripe"
    elif body.connector is not None and not accepts(body.connector, method):
        raise InvalidRequest(f"{body.connector} takes card payments as a token: give payment_method.token.",
                             param="payment_method.token", code="parameter_missing")
    elif body.connector is None and method_kind(method) == "checkout":
        routing = await payments_.routing_config(merchant_id)
        if not payments_.candidates(routing, method, None):
            raise _missing_details(method)
    pinned = spec.get("connector")
    if pinned in REAL_CONNECTORS and pinned not in await components_.connector_accounts.active(merchant_id):
        raise InvalidRequest(f"There is no active {pinned} connector account: add one with "
                             "POST /v1/connector_accounts first.", param="connector", code="connector_account_missing")
    if not body.confirm:
        return json_reply(await payments_.create(merchant_id, spec), 201)
    return json_reply(await payments_.create_and_confirm(merchant_id, spec), 201)


async def confirm(components_: Components, merchant_id: str, raw: bytes, payment_id: str) -> Reply:
    """``POST /v1/payments/{id}/confirm`` (a hot POST)."""
    body = validated(ConfirmPayment, raw)
    confirm_ = Confirm(merchant_id, return_url=body.return_url)
    return json_reply(await components_.payments.ask_payment(payment_id, confirm_))


async def capture(components_: Components, merchant_id: str, raw: bytes, payment_id: str) -> Reply:
    """``POST /v1/payments/{id}/capture`` (a hot POST)."""
    body = validated(CapturePayment, raw)
    return json_reply(await components_.payments.ask_payment(payment_id, Capture(merchant_id, body.amount)))


async def cancel(components_: Components, merchant_id: str, raw: bytes, payment_id: str) -> Reply:
    """``POST /v1/payments/{id}/cancel`` (a hot POST)."""
    validated(Empty, raw)
    return json_reply(await components_.payments.ask_payment(payment_id, Cancel(merchant_id)))


# Quart's routes of the hot POSTs. In production app.merchant_endpoint serves them in front of
# Quart; these stay for route listings, the OpenAPI check and apps built without that endpoint.
@bp.post("/v1/payments")
async def create_payment():
    return await quart_post(create)


@bp.post("/v1/payments/<payment_id>/confirm")
async def confirm_payment(payment_id: str):
    return await quart_post(confirm, payment_id)


@bp.post("/v1/payments/<payment_id>/capture")
async def capture_payment(payment_id: str):
    return await quart_post(capture, payment_id)


@bp.post("/v1/payments/<payment_id>/cancel")
async def cancel_payment(payment_id: str):
    return await quart_post(cancel, payment_id)


@bp.get("/v1/payments/<payment_id>")
@merchant_required
async def get_payment(payment_id: str):
    return json_response(await components().payments.get(g.merchant_id, payment_id))


@bp.get("/v1/payments")
@merchant_required
async def list_payments():
    limit, after, filters = page_params(extra_filters=("status", "order_id", "customer_id"))
    items, more = await components().payments.list_page(g.merchant_id, limit=limit,
                                                        starting_after=after, filters=filters)
    return json_response(render.page(items, more))
