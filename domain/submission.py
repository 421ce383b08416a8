"""A connector's immediate answer to a refund or payout request (sans-IO value)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Submission:
    """A connector's immediate answer to a refund or payout request.

    ``pending``: accepted, the outcome comes by webhook; ``succeeded`` or
    ``failed``: decided now. ``reference`` is the connector's own id for it.
    """

    status: str
    reference: str | None = None
    error_code: str | None = None
