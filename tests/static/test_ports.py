"""The payment side provides what each actor's protocol (actors/ports.py) asks of it."""

from __future__ import annotations

import inspect
import typing

import pytest

from actors import ports
from components.payments import Payments

PROTOCOLS = [ports.ConnectorWork, ports.Reconciling, ports.PendingChecks, ports.InboxApplies, ports.AccountSide,
             ports.PaymentSide]


def _members(protocol: type) -> set[str]:
    names: set[str] = set()
    for klass in protocol.__mro__:
        if klass in (object, typing.Protocol, typing.Generic):
            continue
        names |= set(getattr(klass, "__annotations__", {}))
        names |= {n for n, v in vars(klass).items() if inspect.isfunction(v) and not n.startswith("_")}
    return names


@pytest.mark.parametrize("protocol", PROTOCOLS, ids=lambda p: p.__name__)
def test_payments_provides_every_member_of(protocol):
    # Attributes are set in __init__ (its code names them); methods are the class's.
    provided = set(vars(Payments)) | set(Payments.__init__.__code__.co_names)
    missing = _members(protocol) - provided
    assert not missing, f"components.payments.Payments lacks {sorted(missing)} of actors.ports.{protocol.__name__}"
