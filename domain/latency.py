"""Latency histograms with fixed buckets, as Prometheus' (mergeable by adding counts).

A histogram is a mapping ``bucket label -> count`` where the label is the
bucket's upper bound in milliseconds as text (``"25"``, ``"+Inf"``) and each
count is that bucket's own (not cumulative): two histograms merge by adding
their counts label by label, whatever the period or process they came from.
Quantiles are estimated as Prometheus' ``histogram_quantile`` does: linear
interpolation inside the bucket the rank falls in.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping

# Upper bounds (ms) of the finite buckets; a last "+Inf" bucket takes the rest.
BOUNDS_MS: tuple[float, ...] = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
INF = "+Inf"


def _label(bound: float) -> str:
    return f"{bound:g}"


LABELS: tuple[str, ...] = tuple(_label(b) for b in BOUNDS_MS) + (INF,)


def bucket_of(latency_ms: float) -> str:
    """The label of the bucket ``latency_ms`` falls in (a value equal to a bound belongs to that bucket)."""
    i = bisect.bisect_left(BOUNDS_MS, latency_ms)
    return LABELS[i]


def quantile(q: float, counts: Mapping[str, int]) -> float | None:
    """Estimated ``q``-quantile (0 ≤ q ≤ 1) of a histogram, in ms; None when it is empty.

    The rank falls in one bucket; the estimate interpolates linearly between
    that bucket's lower and upper bounds (0 for the first). A rank in the
    ``+Inf`` bucket answers the highest finite bound, as Prometheus does.

    Raises:
      ValueError: ``q`` outside [0, 1].
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} outside [0, 1]")
    ordered = [max(0, int(counts.get(label, 0))) for label in LABELS]
    total = sum(ordered)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(ordered):
        if n and seen + n >= rank:
            if i == len(BOUNDS_MS):
                return float(BOUNDS_MS[-1])
            lower = BOUNDS_MS[i - 1] if i else 0.0
            return lower + (BOUNDS_MS[i] - lower) * max(0.0, rank - seen) / n
        seen += n
    return float(BOUNDS_MS[-1])  # unreachable with total > 0; keeps the type checker calm


def merge(*histograms: Mapping[str, int]) -> dict[str, int]:
    """The sum of histograms, label by label (only labels with a count)."""
    out: dict[str, int] = {}
    for h in histograms:
        for label, n in h.items():
            out[label] = out.get(label, 0) + int(n)
    return {label: n for label, n in out.items() if n}


def finite(value: float | None) -> bool:
    """Whether ``value`` is a latency worth counting (a number, not NaN, not negative)."""
    return value is not None and math.isfinite(value) and value >= 0
