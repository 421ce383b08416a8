"""Money: integer minor units and ISO 4217 currencies."""

from __future__ import annotations

from domain.errors import InvalidRequest

# The currencies our connectors settle. A list rather than "any three letters"
# so a typo like "UDS" is refused at the door instead of failing at a gateway.
CURRENCIES = frozenset(
    {
        "INR", "USD", "EUR", "GBP", "JPY", "AUD", "CAD", "SGD", "AED", "CHF",
        "CNY", "HKD", "NZD", "SEK", "NOK", "DKK", "ZAR", "BRL", "MXN", "MYR",
        "THB", "IDR", "PHP", "KRW", "PLN", "CZK", "HUF", "ILS", "SAR", "QAR",
    }
)
# 99,999,999.99 in a two-decimal currency: the largest single amount Stripe takes.
MAX_AMOUNT = 99_999_999_99


def validate_currency(value: object, param: str = "currency") -> str:
    """Return ``value`` if it is a supported uppercase ISO 4217 code.

    Raises:
      InvalidRequest: naming ``param``.
    """
    if not isinstance(value, str) or value not in CURRENCIES:
        raise InvalidRequest(
            f"Invalid currency {value!r}: use an uppercase ISO 4217 code such as INR or USD.",
            param=param,
        )
    return value


def validate_amount(value: object, param: str = "amount") -> int:
    """Return ``value`` if it is a positive integer amount in minor units.

    Raises:
      InvalidRequest: naming ``param``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_AMOUNT:
        raise InvalidRequest(
            f"Invalid amount {value!r}: a positive integer in minor units up to {MAX_AMOUNT}.",
            param=param,
        )
    return value
