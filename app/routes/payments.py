"""``/v1/payments``: create (optionally confirming), confirm, capture, cancel, read."""

from __future__ import annotations

from quart import Blueprint, g

from actors.payment_messages import Cancel, Capture, Confirm
from app.auth import merchant_required
from app.body import json_response, page_params, parse
from app.context import components
from app.idempotency import idempotent
from app.schemas import CapturePayment, CreatePayment, Empty, PaymentMethod
from domain import cards, render
from domain.errors import InvalidRequest
from storage import payments

bp = Blueprint("payments", __name__)



def stored_method(method: PaymentMethod) -> dict:
    """The payment method as it may be stored: a card is truncated to first 6 + last 4.

    Raises:
      InvalidRequest: the details required by ``type`` are missing or invalid.
    """
    out: dict = {"type": method.type}
    if method.type == "card":
        if method.card is None:
            raise InvalidRequest("A card payment needs payment_method.card.number.",
                                 param="payment_method.card.number", code="parameter_missing")
        out["card"] = cards.truncate(method.card.number)
    elif method.type == "upi":
        if method.upi is None:
            raise InvalidRequest("A UPI payment needs payment_method.upi.vpa.",
                                 param="payment_method.upi.vpa", code="parameter_missing")
        out["upi"] = {"vpa": method.upi.vpa}
    else:
        details = getattr(method, method.type)
        if details:
            out[method.type] = details
    return out


@bp.post("/v1/payments")
@merchant_required
@idempotent
async def create_payment():
    body = await parse(CreatePayment)
    payments_ = components().payments
    if body.connector is not None and body.connector not in payments_.routing.known_connectors:
        raise InvalidRequest(f"Unknown connector {body.connector!r}.", param="connector")
    spec = body.model_dump(exclude={"confirm", "payment_method"})
    spec["payment_method"] = stored_method(body.payment_method)
    if not body.confirm:
        payment = await payments_.create(g.merchant_id, spec)
        return json_response(payment, 201)
    return json_response(await payments_.create_and_confirm(g.merchant_id, spec), 201)


@bp.post("/v1/payments/<payment_id>/confirm")
@merchant_required
@idempotent
async def confirm_payment(payment_id: str):
    await parse(Empty)
    return json_response(await components().payments.ask_payment(payment_id, Confirm(g.merchant_id)))


@bp.post("/v1/payments/<payment_id>/capture")
@merchant_required
@idempotent
async def capture_payment(payment_id: str):
    body = await parse(CapturePayment)
    return json_response(await components().payments.ask_payment(payment_id, Capture(g.merchant_id, body.amount)))


@bp.post("/v1/payments/<payment_id>/cancel")
@merchant_required
@idempotent
async def cancel_payment(payment_id: str):
    await parse(Empty)
    return json_response(await components().payments.ask_payment(payment_id, Cancel(g.merchant_id)))


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
