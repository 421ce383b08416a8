"""Order status follows its payments: paid once one succeeds."""

from __future__ import annotations

ORDER_STATUSES = ("created", "paid", "payment_failed", "refunded")


def order_status_after_payment(order_status: str, payment_status: str) -> str | None:
    """The order's new status after one of its payments reached ``payment_status``.

    Returns:
      The new status, or ``None`` when the order does not change (a paid order
      stays paid whatever a later payment does; refunds move it later).
    """
    if order_status in ("paid", "refunded"):
        return None
    if payment_status == "succeeded":
        return "paid"
    if payment_status == "failed" and order_status != "payment_failed":
        return "payment_failed"
    return None
