"""Card numbers: validation, brand, and the truncated form we keep.

PCI DSS allows storing the first six and last four digits; nothing else of a
card number is ever written anywhere (database, logs, responses).
"""

from __future__ import annotations

from domain.errors import InvalidRequest

_BRANDS = (("4", "visa"), ("5", "mastercard"), ("34", "amex"), ("37", "amex"), ("6", "discover"))


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def truncate(number: object, param: str = "payment_method.card.number") -> dict:
    """Validate a card number and return what may be stored of it.

    Returns:
      ``{"brand", "first6", "last4"}``.

    Raises:
      InvalidRequest: not 12-19 digits, or the Luhn check fails.
    """
    if not isinstance(number, str):
        raise InvalidRequest("The card number must be a string of digits.", param=param)
    digits = number.replace(" ", "")
    if not (digits.isascii() and digits.isdigit()) or not 12 <= len(digits) <= 19 or not luhn_ok(digits):
        raise InvalidRequest("The card number is not a valid card number.", param=param, code="incorrect_number")
    brand = next((b for prefix, b in _BRANDS if digits.startswith(prefix)), "unknown")
    return {"brand": brand, "first6": digits[:6], "last4": digits[-4:]}


# A Stripe PaymentMethod id: ``pm_`` then letters, digits and underscores
# (``pm_1Q0PsIJvEtkwdCNYMSaVuRz6``, test tokens such as ``pm_card_visa``).
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def validate_token(token: object, param: str = "payment_method.token") -> str:
    """Check a card token (a gateway's PaymentMethod id; never a card number).

    Returns:
      The token.

    Raises:
      InvalidRequest: not ``pm_`` followed by 1-250 letters, digits or underscores.
    """
    if (not isinstance(token, str) or not token.startswith("pm_") or not 4 <= len(token) <= 253
            or not set(token[3:]) <= _TOKEN_CHARS):
        raise InvalidRequest("The payment method token must be a PaymentMethod id such as 'pm_card_visa'.",
                             param=param, code="invalid_token")
    return token


def public_card(details: object) -> dict | None:
    """What may be kept of a gateway's description of a card: brand and last 4, or None.

    Args:
      details: ``Outcome.method_details`` / ``GatewayEvent.method_details``.
    """
    if not isinstance(details, dict):
        return None
    brand, last4 = details.get("brand"), details.get("last4")
    out = {}
    if isinstance(brand, str) and 0 < len(brand) <= 40:
        out["brand"] = brand
    if isinstance(last4, str) and len(last4) == 4 and last4.isdigit():
        out["last4"] = last4
    return out or None
