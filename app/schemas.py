"""Request bodies as pydantic models. Unknown fields are refused (Stripe does the
same), so a typo in a parameter name is a 400 naming it, not a silent default."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, WithJsonSchema,
                      field_validator)

from domain import urls
from domain.money import CURRENCIES, MAX_AMOUNT, validate_currency


def _json_integer(value: object) -> object:
    """JSON has one number type: ``2500.0`` is the integer 2500 (JSON Schema's ``integer``
    agrees, and generated clients may send it so); ``2500.5``, strings and booleans are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[StrictInt, BeforeValidator(_json_integer)]
Amount = JsonInt
# Bounds before the conversion, so the JSON schema of an optional amount shows them (minimum/maximum).
PositiveAmount = Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT), BeforeValidator(_json_integer)]
# The JSON schemas below say what the validators (validate_currency, _metadata_ok) check,
# so /openapi.json is as strict as validation.
# app.openapi names it once in the document's components, so a generated client has one enum.
CURRENCY_SCHEMA = {"title": "Currency", "type": "string", "enum": sorted(CURRENCIES),
                   "description": "Uppercase ISO 4217 code"}
Currency = Annotated[StrictStr, WithJsonSchema(CURRENCY_SCHEMA)]
Metadata = Annotated[dict[StrictStr, StrictStr], WithJsonSchema({
    "type": "object", "maxProperties": 50, "propertyNames": {"maxLength": 40},
    "additionalProperties": {"type": "string", "maxLength": 500}})]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=5000)


def _metadata_ok(value: dict | None) -> dict | None:
    if value is not None:
        if len(value) > 50:
            raise ValueError("metadata may have at most 50 keys")
        if any(len(k) > 40 or len(v) > 500 for k, v in value.items()):
            raise ValueError("metadata keys are at most 40 characters and values at most 500")
    return value


def _return_url_ok(value: str | None) -> str | None:
    """An absolute http(s) URL (the gateway redirects the customer's browser there), of the
    shape the OpenAPI document gives it (:data:`domain.urls.HTTP_URL`)."""
    if value is not None and not urls.is_http_url(value):
        raise ValueError("return_url must be an absolute http or https URL (a host name or [IPv6] address,"
                         " an optional port, then printable ASCII)")
    return value


class CreateMerchant(Strict):
    name: StrictStr = Field(min_length=1, max_length=200)


class CreateOrder(Strict):
    amount: Amount = Field(ge=1, le=MAX_AMOUNT)
    currency: Currency
    customer_id: StrictStr | None = Field(None, min_length=1, max_length=255)
    metadata: Metadata | None = None

    _currency = field_validator("currency")(lambda cls, v: validate_currency(v))
    _metadata = field_validator("metadata")(lambda cls, v: _metadata_ok(v))


class CardDetails(Strict):
    number: StrictStr = Field(min_length=1, max_length=40)


class UpiDetails(Strict):
    vpa: StrictStr = Field(min_length=3, max_length=255, pattern=r"^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+$")


class PaymentMethod(Strict):
    type: Literal["card", "upi", "netbanking", "wallet"]
    # v1.2: a gateway's card token (a Stripe PaymentMethod ``pm_…``) instead of card details.
    token: StrictStr | None = Field(None, min_length=1, max_length=255)
    card: CardDetails | None = None
    upi: UpiDetails | None = None
    # Free-form details of the other method types (bank code, wallet name).
    netbanking: dict[StrictStr, StrictStr] | None = None
    wallet: dict[StrictStr, StrictStr] | None = None


class CreatePayment(Strict):
    amount: Amount = Field(ge=1, le=MAX_AMOUNT)
    currency: Currency
    order_id: StrictStr | None = None
    customer_id: StrictStr | None = Field(None, min_length=1, max_length=255)
    payment_method: PaymentMethod
    capture_method: Literal["automatic", "manual"] = "automatic"
    connector: StrictStr | None = None
    confirm: StrictBool = False
    return_url: StrictStr | None = Field(None, max_length=2048)
    metadata: Metadata | None = None

    _currency = field_validator("currency")(lambda cls, v: validate_currency(v))
    _metadata = field_validator("metadata")(lambda cls, v: _metadata_ok(v))
    _return_url = field_validator("return_url")(lambda cls, v: _return_url_ok(v))


class ConfirmPayment(Strict):
    """``POST /v1/payments/{id}/confirm``: where a customer action (3-D Secure) comes back to."""

    return_url: StrictStr | None = Field(None, max_length=2048)

    _return_url = field_validator("return_url")(lambda cls, v: _return_url_ok(v))


class CapturePayment(Strict):
    amount: PositiveAmount | None = None


class Empty(Strict):
    """For POSTs that take no parameters (confirm, cancel): anything given is refused."""


class CreateRefund(Strict):
    payment_id: StrictStr = Field(min_length=1, max_length=255)
    amount: PositiveAmount | None = None
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None
    metadata: Metadata | None = None

    _metadata = field_validator("metadata")(lambda cls, v: _metadata_ok(v))


class DisputeEvidence(Strict):
    text: StrictStr = Field(min_length=1, max_length=50_000)


class CreateAccount(Strict):
    customer_id: StrictStr = Field(min_length=1, max_length=255)
    currency: Currency
    metadata: Metadata | None = None

    _currency = field_validator("currency")(lambda cls, v: validate_currency(v))
    _metadata = field_validator("metadata")(lambda cls, v: _metadata_ok(v))


class CreateDeposit(Strict):
    amount: Amount = Field(ge=1, le=MAX_AMOUNT)
    payment_method: PaymentMethod


class CreateWithdrawal(Strict):
    amount: Amount = Field(ge=1, le=MAX_AMOUNT)


class CreateWebhookEndpoint(Strict):
    url: StrictStr = Field(min_length=1, max_length=2048)
    enabled_events: list[StrictStr] = Field(min_length=1, max_length=100)
    description: StrictStr | None = Field(None, max_length=500)
