"""One error hierarchy: connector errors and the contract's errors share the
root ``CodedError``; a connector error is never an answer by itself."""

from __future__ import annotations

import pytest

from domain import disputes, payments, refunds
from domain.errors import CodedError, IllegalTransition, PaycastError, StateError
from gateways.base import CircuitOpen, ConnectorError, ConnectorRefused, ConnectorTimeout


def test_connector_errors_share_the_root_but_are_not_answers():
    for cls in (ConnectorError, ConnectorTimeout, ConnectorRefused, CircuitOpen):
        assert issubclass(cls, CodedError)
        assert not issubclass(cls, PaycastError)  # `except PaycastError` at the edge does not swallow them


def test_a_code_given_by_the_raiser_wins_else_the_class_code():
    assert ConnectorRefused("no", code="charge_already_refunded").code == "charge_already_refunded"
    assert ConnectorRefused("no", code=None).code == "connector_refused"
    assert ConnectorTimeout("late").code == "connector_timeout"
    assert ConnectorTimeout("late").message == "late"


@pytest.mark.parametrize("machine, current, trigger, code", [
    (payments.MACHINE, "succeeded", payments.Trigger.CAPTURE, "payment_unexpected_state"),
    (refunds.MACHINE, "failed", refunds.Trigger.SUCCEED, "payment_unexpected_state"),
    (disputes.MACHINE, "won", disputes.Trigger.ACCEPT, "dispute_unexpected_state"),
])
def test_every_machine_refuses_with_one_typed_error(machine, current, trigger, code):
    with pytest.raises(IllegalTransition) as err:
        machine.next_status(current, trigger)
    assert isinstance(err.value, StateError) and err.value.code == code
    assert (err.value.machine, err.value.current, err.value.trigger) == (machine.name, current, trigger.value)
