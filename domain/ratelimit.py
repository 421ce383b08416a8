"""A token bucket per API key. Time is passed in, so the policy is testable
without sleeping; the HTTP edge owns one bucket per merchant."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    Args:
      rate: sustained requests per second.
      burst: the most requests allowed at once after a quiet period.
    """

    rate: float
    burst: float
    tokens: float = -1.0
    updated: float = 0.0

    def take(self, now: float) -> float:
        """Spend one token.

        Returns:
          0.0 when allowed; otherwise the seconds until a token is available
          (what ``Retry-After`` should say).
        """
        if self.tokens < 0:
            self.tokens, self.updated = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` is whole seconds; never say 0 to a refused client."""
    return str(max(1, math.ceil(wait_s)))
