"""Routing policy: which connectors to try, in which order. Pure functions over
immutable snapshots, so the same decision can be computed anywhere."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from domain.errors import InvalidRequest

STRATEGIES = ("priority", "volume_split", "success_rate")
DEFAULT_CONNECTORS = ("mockstripe", "mockrazorpay")
# The largest volume-split weight: JSON's largest exact integer (2**53 - 1), so a policy
# round-trips through every JSON client and the jsonb column unchanged.
MAX_WEIGHT = 2**53 - 1
# Connectors that call a merchant's own gateway account (v1.2). They never see
# a raw card number: Stripe takes a token, Razorpay collects the method itself.
REAL_CONNECTORS = frozenset({"stripe", "razorpay"})


def method_kind(method: Mapping) -> str:
    """How a stored payment method reaches a gateway.

    Returns:
      ``"token"`` (a card token, ``{"type": "card", "token"}``), ``"raw"`` (a
      card number or UPI address the simulators use), or ``"checkout"`` (no
      details: the gateway's own checkout collects them).
    """
    if method.get("token"):
        return "token"
    kind = method.get("type")
    if (kind == "card" and (method.get("card") or {}).get("first6")) or (kind == "upi" and method.get("upi")):
        return "raw"
    if kind in ("card", "upi"):
        return "checkout"
    return "raw"  # netbanking/wallet: the simulators take them with or without details


def accepts(connector: str, method: Mapping) -> bool:
    """Whether ``connector`` may be offered a payment with the stored ``method``.

    Stripe takes card tokens only; Razorpay takes methods whose details its
    checkout collects (never a raw card number); the simulators take anything
    but a token and a card or UPI without details.
    """
    kind = method_kind(method)
    if connector == "stripe":
        return kind == "token"
    if connector == "razorpay":
        return kind == "checkout" or (kind == "raw" and method.get("type") != "card")
    return kind == "raw"


@dataclass(frozen=True)
class Rule:
    payment_method_type: str
    connectors: tuple[str, ...]


@dataclass(frozen=True)
class RoutingConfig:
    strategy: str = "priority"
    connectors: tuple[str, ...] = DEFAULT_CONNECTORS
    weights: dict[str, int] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()

    def to_dict(self) -> dict:
        out: dict = {"object": "routing", "strategy": self.strategy, "connectors": list(self.connectors),
                     "weights": dict(self.weights),
                     "rules": [{"payment_method_type": r.payment_method_type, "connectors": list(r.connectors)}
                               for r in self.rules]}
        return out

    @classmethod
    def from_dict(cls, data: dict | None, known: frozenset[str]) -> "RoutingConfig":
        """Build and validate a config (from a request or the database).

        Raises:
          InvalidRequest: naming the bad field.
        """
        if not data:
            return cls()
        strategy = data.get("strategy", "priority")
        if strategy not in STRATEGIES:
            raise InvalidRequest(f"strategy must be one of {', '.join(STRATEGIES)}.", param="strategy")
        # Absent (None) or empty falls back; any other value must be the right type:
        # `false` or `{}` is not "no connectors" but a mistake to name.
        raw_connectors = data.get("connectors")
        connectors = tuple(_names(list(DEFAULT_CONNECTORS) if raw_connectors in (None, []) else raw_connectors,
                                  "connectors"))
        _check_known(connectors, known, "connectors")
        raw_weights = {} if data.get("weights") is None else data["weights"]
        if not isinstance(raw_weights, dict):
            raise InvalidRequest("weights must be an object of connector → weight.", param="weights")
        weights = {str(k): _weight(v) for k, v in raw_weights.items()}
        _check_known(tuple(weights), known, "weights")
        rules = []
        raw_rules = [] if data.get("rules") is None else data["rules"]
        if not isinstance(raw_rules, list):
            raise InvalidRequest("rules must be a list.", param="rules")
        for i, rule in enumerate(raw_rules):
            if not isinstance(rule, dict) or not rule.get("payment_method_type") or not rule.get("connectors"):
                raise InvalidRequest("Each rule needs payment_method_type and connectors.", param=f"rules.{i}")
            names = tuple(_names(rule["connectors"], f"rules.{i}.connectors"))
            _check_known(names, known, f"rules.{i}.connectors")
            rules.append(Rule(str(rule["payment_method_type"]), names))
        return cls(strategy, connectors, weights, tuple(rules))


def _weight(value: object) -> int:
    """A volume-split weight: an integer from 0 to :data:`MAX_WEIGHT`; JSON's ``70.0`` is 70,
    as for every integer of the API.

    Raises:
      InvalidRequest: anything else.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WEIGHT:
        raise InvalidRequest(f"weights must be integers from 0 to {MAX_WEIGHT}.", param="weights")
    return value


def _names(value: object, param: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{param} must be a non-empty list of connector names.", param=param)
    return value


def _check_known(names: tuple, known: frozenset[str], param: str) -> None:
    for name in names:
        if name not in known:
            raise InvalidRequest(f"Unknown connector {name!r}.", param=param)


def candidates(config: RoutingConfig, method_type: str, *, pinned: str | None = None,
               unavailable: frozenset[str] = frozenset(), success_rates: dict[str, float] | None = None,
               rng: random.Random | None = None, method: Mapping | None = None) -> list[str]:
    """Connectors to try for one payment, best first.

    Args:
      pinned: the payment's own ``connector``; then it is the only candidate.
      unavailable: connectors whose circuit is open; skipped. When every
        candidate is open they are all returned, and the connector call
        refuses them without sending anything (the payment fails with
        ``connector_unavailable``, nothing charged).
      success_rates: recent success rate per connector (``success_rate`` strategy).
      method: the stored payment method; connectors that may not be offered it
        are left out (:func:`accepts`: a raw card number never goes to a real
        connector).

    Returns:
      The connector names; empty only when ``method`` rules every one out.
    """
    if pinned:
        return [pinned]
    base = next((r.connectors for r in config.rules if r.payment_method_type == method_type), config.connectors)
    order = [c for c in dict.fromkeys(base) if method is None or accepts(c, method)]
    if config.strategy == "volume_split" and config.weights:
        order = _weighted_order(order, config.weights, rng or random)
    elif config.strategy == "success_rate" and success_rates:
        order.sort(key=lambda name: -success_rates.get(name, 1.0))
    healthy = [c for c in order if c not in unavailable]
    return healthy or order


def _weighted_order(names: list[str], weights: dict[str, int], rng) -> list[str]:
    remaining = list(names)
    out = []
    while remaining:
        total = sum(weights.get(n, 0) for n in remaining)
        if total <= 0:
            out.extend(remaining)
            break
        pick = rng.random() * total
        for name in remaining:
            pick -= weights.get(name, 0)
            if pick < 0:
                break
        out.append(name)
        remaining.remove(name)
    return out
