"""The payment state machine of domain/payments.py: transition table, settle()
and validate_capture(), with hypothesis properties over trigger sequences."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from app.errors import status_of  # the HTTP status is the edge's mapping
from domain.errors import InvalidRequest, PaycastError, StateError
from domain.money import MAX_AMOUNT
from domain.payments import (
    AWAITING_ANSWER,
    CAPTURE_METHODS,
    METHOD_TYPES,
    TERMINAL,
    TRANSITIONS,
    Outcome,
    OutcomeKind,
    Settlement,
    Status,
    Trigger,
    can,
    moves,
    next_status,
    settle,
    validate_capture,
)

S, T = Status, Trigger

# Written out independently from docs/api.md "Payments", not copied from the module.
EXPECTED_EDGES = {
    (S.REQUIRES_CONFIRMATION, T.CONFIRM): S.PROCESSING,
    (S.REQUIRES_CONFIRMATION, T.CANCEL): S.CANCELED,
    (S.PROCESSING, T.SUCCEED): S.SUCCEEDED,
    (S.PROCESSING, T.AUTHORIZE): S.REQUIRES_CAPTURE,
    (S.PROCESSING, T.FAIL): S.FAILED,
    (S.REQUIRES_CAPTURE, T.CAPTURE): S.SUCCEEDED,
    (S.REQUIRES_CAPTURE, T.CANCEL): S.CANCELED,
    # v1.2: "a confirm may also give requires_action ..., which leads to
    # processing | succeeded | requires_capture | failed | canceled".
    (S.PROCESSING, T.REQUIRE_ACTION): S.REQUIRES_ACTION,
    (S.REQUIRES_ACTION, T.RESUME): S.PROCESSING,
    (S.REQUIRES_ACTION, T.SUCCEED): S.SUCCEEDED,
    (S.REQUIRES_ACTION, T.AUTHORIZE): S.REQUIRES_CAPTURE,
    (S.REQUIRES_ACTION, T.FAIL): S.FAILED,
    (S.REQUIRES_ACTION, T.CANCEL): S.CANCELED,
}
ALL_PAIRS = list(itertools.product(Status, Trigger))
ILLEGAL_PAIRS = [p for p in ALL_PAIRS if p not in EXPECTED_EDGES]
ATTEMPT_STATUSES = {"started", "succeeded", "failed", "unknown", "authorized"}  # docs/api.md


def _id(pair):
    return f"{pair[0].value}-{pair[1].value}"


# --------------------------------------------------------------------------- table


def test_transition_table_is_exactly_the_documented_one():
    assert TRANSITIONS == EXPECTED_EDGES


def test_enum_values_match_the_api_strings():
    assert {s.value for s in Status} == {
        "requires_confirmation", "processing", "requires_action", "requires_capture", "succeeded", "failed",
        "canceled",
    }
    assert {t.value for t in Trigger} == {"confirm", "succeed", "authorize", "fail", "capture", "cancel",
                                          "require_action", "resume"}
    assert CAPTURE_METHODS == {"automatic", "manual"}
    assert METHOD_TYPES == {"card", "upi", "netbanking", "wallet"}


@pytest.mark.parametrize("pair", list(EXPECTED_EDGES), ids=_id)
def test_every_legal_edge(pair):
    current, trigger = pair
    assert next_status(current, trigger) is EXPECTED_EDGES[pair]
    # The string form of a status (as stored in the database) works too.
    assert next_status(current.value, trigger) is EXPECTED_EDGES[pair]
    assert can(current, trigger) is True
    assert can(current.value, trigger) is True


@pytest.mark.parametrize("pair", ILLEGAL_PAIRS, ids=_id)
def test_every_illegal_edge_raises_state_error(pair):
    current, trigger = pair
    with pytest.raises(StateError) as info:
        next_status(current, trigger)
    err = info.value
    assert isinstance(err, PaycastError)
    assert err.type == "state_error"
    assert err.code == "payment_unexpected_state"
    assert status_of(err) == 409
    assert err.param is None
    # The message names both what was tried and the current status.
    assert trigger.value in err.message
    assert current.value in err.message
    assert err.to_dict() == {
        "error": {"type": "state_error", "code": "payment_unexpected_state", "message": err.message, "param": None}
    }
    assert can(current, trigger) is False
    assert can(current.value, trigger) is False


def test_illegal_edge_from_string_status_raises_state_error():
    with pytest.raises(StateError):
        next_status("succeeded", Trigger.CAPTURE)


def test_terminal_statuses():
    assert TERMINAL == {S.SUCCEEDED, S.FAILED, S.CANCELED}


@pytest.mark.parametrize("status", sorted(TERMINAL, key=lambda s: s.value), ids=lambda s: s.value)
def test_terminal_status_has_no_outgoing_edges(status):
    assert not [key for key in TRANSITIONS if key[0] is status]
    for trigger in Trigger:
        assert can(status, trigger) is False
        with pytest.raises(StateError) as info:
            next_status(status, trigger)
        assert info.value.code == "payment_unexpected_state"


@pytest.mark.parametrize("status", [s for s in Status if s not in TERMINAL], ids=lambda s: s.value)
def test_every_non_terminal_status_has_a_way_out(status):
    assert any(can(status, trigger) for trigger in Trigger)


def test_every_status_is_reachable_from_requires_confirmation():
    seen = {S.REQUIRES_CONFIRMATION}
    frontier = [S.REQUIRES_CONFIRMATION]
    while frontier:
        current = frontier.pop()
        for trigger in Trigger:
            if can(current, trigger):
                nxt = next_status(current, trigger)
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
    assert seen == set(Status)


def test_no_edge_leads_back_to_requires_confirmation():
    assert S.REQUIRES_CONFIRMATION not in TRANSITIONS.values()


def test_unknown_status_string_is_rejected():
    with pytest.raises(ValueError):
        next_status("bogus", Trigger.CONFIRM)


# ------------------------------------------------------------ hypothesis properties

triggers = st.lists(st.sampled_from(list(Trigger)), max_size=40)


def _walk(start: Status, sequence):
    """Apply the legal triggers of ``sequence`` and skip the ones that raise."""
    history = [start]
    current = start
    for trigger in sequence:
        try:
            current = next_status(current, trigger)
        except StateError:
            assert not can(current, trigger)
            continue
        history.append(current)
    return history


@settings(max_examples=300, deadline=None)
@given(start=st.sampled_from(list(Status)), sequence=triggers)
def test_terminal_status_never_changes_again(start, sequence):
    current = start
    reached_terminal: Status | None = None
    for trigger in sequence:
        legal = can(current, trigger)
        try:
            nxt = next_status(current, trigger)
        except StateError as exc:
            assert not legal
            assert exc.code == "payment_unexpected_state"
            continue
        assert legal
        assert (current, trigger) in TRANSITIONS
        if reached_terminal is not None:
            pytest.fail(f"{reached_terminal} moved to {nxt} on {trigger}")
        current = nxt
        if current in TERMINAL:
            reached_terminal = current
    if reached_terminal is not None:
        assert current is reached_terminal


@settings(max_examples=200, deadline=None)
@given(sequence=triggers)
def test_walk_from_creation_follows_the_documented_paths(sequence):
    history = _walk(S.REQUIRES_CONFIRMATION, sequence)
    for a, b in zip(history, history[1:]):
        assert b in {EXPECTED_EDGES[k] for k in EXPECTED_EDGES if k[0] is a}
    # The only cycle is a customer action and its resumption (processing ⇄
    # requires_action); without it a payment changes status at most three
    # times (confirm, authorize, capture) and visits no status twice.
    settled = [s for s in history if s is not S.REQUIRES_ACTION]
    settled = [s for i, s in enumerate(settled) if i == 0 or s is not settled[i - 1]]
    assert len(settled) <= 4
    assert len(set(settled)) == len(settled)
    # Anything that left requires_confirmation went through a confirm or a cancel.
    if len(history) > 1:
        assert history[1] in {S.PROCESSING, S.CANCELED}
    # requires_action is entered from processing only, and never from a terminal status.
    for a, b in zip(history, history[1:]):
        if b is S.REQUIRES_ACTION:
            assert a is S.PROCESSING


def test_requires_action_leads_exactly_where_the_contract_says():
    reachable = {EXPECTED_EDGES[k] for k in EXPECTED_EDGES if k[0] is S.REQUIRES_ACTION}
    assert reachable == {S.PROCESSING, S.SUCCEEDED, S.REQUIRES_CAPTURE, S.FAILED, S.CANCELED}
    assert {k[0] for k in EXPECTED_EDGES if EXPECTED_EDGES[k] is S.REQUIRES_ACTION} == {S.PROCESSING}
    # The merchant's cancel works from requires_action too; a capture does not.
    assert can(S.REQUIRES_ACTION, T.CANCEL)
    assert not can(S.REQUIRES_ACTION, T.CAPTURE)
    assert not can(S.REQUIRES_ACTION, T.CONFIRM)


class PaymentMachine(RuleBasedStateMachine):
    """Random triggers against one payment; illegal ones must raise and change nothing."""

    @initialize(start=st.sampled_from(list(Status)))
    def start(self, start):
        self.status = start
        self.terminal_at: Status | None = start if start in TERMINAL else None

    @rule(trigger=st.sampled_from(list(Trigger)))
    def fire(self, trigger):
        before = self.status
        try:
            self.status = next_status(self.status, trigger)
        except StateError as exc:
            assert exc.type == "state_error"
            assert exc.code == "payment_unexpected_state"
            assert self.status is before
            return
        assert (before, trigger) in TRANSITIONS
        if self.status in TERMINAL and self.terminal_at is None:
            self.terminal_at = self.status

    @invariant()
    def terminal_is_sticky(self):
        if self.terminal_at is not None:
            assert self.status is self.terminal_at

    @invariant()
    def status_is_a_status(self):
        assert isinstance(self.status, Status)


PaymentMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestPaymentMachine = PaymentMachine.TestCase


# -------------------------------------------------------------------------- settle


def test_settle_succeeded():
    s = settle(2500, Outcome(OutcomeKind.SUCCEEDED, connector_txn_id="ch_1"))
    assert s == Settlement(S.SUCCEEDED, "succeeded", 2500, 0, None)
    assert s.amount_received == 2500


def test_settle_authorized():
    s = settle(2500, Outcome(OutcomeKind.AUTHORIZED, connector_txn_id="ch_1"))
    assert s == Settlement(S.REQUIRES_CAPTURE, "authorized", 0, 2500, None)
    assert s.amount_capturable == 2500


def test_settle_declined_keeps_the_connector_error_code_and_message():
    s = settle(900, Outcome(OutcomeKind.DECLINED, error_code="insufficient_funds",
                            message="Your card has insufficient funds."))
    assert s.status is S.FAILED
    assert s.attempt_status == "failed"
    assert s.amount_received == 0
    assert s.amount_capturable == 0
    assert s.last_error == {"code": "insufficient_funds", "message": "Your card has insufficient funds."}


def test_settle_declined_without_details_defaults_to_card_declined():
    s = settle(900, Outcome(OutcomeKind.DECLINED))
    assert s.status is S.FAILED
    assert s.last_error["code"] == "card_declined"
    assert isinstance(s.last_error["message"], str)
    assert s.last_error["message"]


def test_settle_pending_stays_processing_without_error():
    s = settle(900, Outcome(OutcomeKind.PENDING, connector_txn_id="pay_x"))
    assert s == Settlement(S.PROCESSING, "started", 0, 0, None)


def test_settle_unknown_stays_processing_with_an_unknown_attempt():
    s = settle(900, Outcome(OutcomeKind.UNKNOWN))
    assert s.status is S.PROCESSING
    assert s.attempt_status == "unknown"
    assert s.amount_received == 0
    assert s.amount_capturable == 0
    assert s.last_error["code"] == "connector_unknown_outcome"
    assert s.last_error["message"]


def test_settle_unknown_keeps_a_given_error_code():
    s = settle(900, Outcome(OutcomeKind.UNKNOWN, error_code="timeout", message="timed out"))
    assert s.last_error == {"code": "timeout", "message": "timed out"}


@pytest.mark.parametrize("kind", list(OutcomeKind), ids=lambda k: k.value)
def test_settle_status_is_a_legal_successor_of_processing(kind):
    s = settle(100, Outcome(kind))
    legal = {next_status(S.PROCESSING, t) for t in Trigger if can(S.PROCESSING, t)}
    assert s.status in legal | {S.PROCESSING}
    assert s.attempt_status in ATTEMPT_STATUSES


def test_settlement_is_frozen():
    s = settle(100, Outcome(OutcomeKind.SUCCEEDED))
    with pytest.raises(Exception):
        s.amount_received = 5  # type: ignore[misc]


outcomes = st.builds(
    Outcome,
    kind=st.sampled_from(list(OutcomeKind)),
    connector_txn_id=st.none() | st.text(max_size=10),
    error_code=st.none() | st.text(min_size=1, max_size=10),
    message=st.none() | st.text(min_size=1, max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(amount=st.integers(min_value=1, max_value=MAX_AMOUNT), outcome=outcomes)
def test_settle_never_receives_more_than_the_amount(amount, outcome):
    s = settle(amount, outcome)
    assert 0 <= s.amount_received <= amount
    assert 0 <= s.amount_capturable <= amount
    # Money is either received or held, never both, and only on success/authorisation.
    assert not (s.amount_received and s.amount_capturable)
    assert (s.amount_received == amount) == (s.status is S.SUCCEEDED)
    assert (s.amount_capturable == amount) == (s.status is S.REQUIRES_CAPTURE)
    assert s.attempt_status in ATTEMPT_STATUSES
    if s.status is S.FAILED:
        assert s.last_error is not None
        assert s.last_error["code"]
    if s.status in (S.SUCCEEDED, S.REQUIRES_CAPTURE):
        assert s.last_error is None


# ----------------------------------------------------------------- validate_capture


def test_capture_without_amount_takes_everything_capturable():
    assert validate_capture(S.REQUIRES_CAPTURE, 2500, None) == 2500
    assert validate_capture("requires_capture", 2500, None) == 2500


def test_partial_capture():
    assert validate_capture(S.REQUIRES_CAPTURE, 2500, 1000) == 1000
    assert validate_capture(S.REQUIRES_CAPTURE, 2500, 1) == 1


def test_full_capture_with_explicit_amount():
    assert validate_capture(S.REQUIRES_CAPTURE, 2500, 2500) == 2500


@pytest.mark.parametrize("amount", [2501, 10**12, 0, -1, True, False, 1000.0, "1000"],
                         ids=repr)
def test_bad_capture_amount_is_an_invalid_request_naming_amount(amount):
    with pytest.raises(InvalidRequest) as info:
        validate_capture(S.REQUIRES_CAPTURE, 2500, amount)
    assert info.value.param == "amount"
    assert info.value.type == "invalid_request_error"
    assert status_of(info.value) == 400


@pytest.mark.parametrize("status", [s for s in Status if s is not S.REQUIRES_CAPTURE], ids=lambda s: s.value)
def test_capture_in_the_wrong_status_is_a_state_error(status):
    with pytest.raises(StateError) as info:
        validate_capture(status, 2500, 1000)
    assert info.value.type == "state_error"
    assert info.value.code == "payment_unexpected_state"
    with pytest.raises(StateError):
        validate_capture(status.value, 2500, None)


def test_wrong_status_is_reported_before_a_bad_amount():
    with pytest.raises(StateError):
        validate_capture(S.SUCCEEDED, 2500, 999_999)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), capturable=st.integers(min_value=1, max_value=MAX_AMOUNT))
def test_capture_accepts_exactly_1_to_capturable(data, capturable):
    amount = data.draw(st.integers(min_value=-10, max_value=MAX_AMOUNT + 10))
    if 1 <= amount <= capturable:
        assert validate_capture(S.REQUIRES_CAPTURE, capturable, amount) == amount
    else:
        with pytest.raises(InvalidRequest) as info:
            validate_capture(S.REQUIRES_CAPTURE, capturable, amount)
        assert info.value.param == "amount"


# ----------------------------------------------------- v1.2: customer actions

NEXT = {"type": "connector_sdk", "connector_sdk": {"connector": "stripe", "data": {"client_secret": "pi_1_secret_2"}}}


def test_settle_requires_action_from_processing_keeps_the_attempt_open_with_its_next_action():
    s = settle(2500, Outcome(OutcomeKind.REQUIRES_ACTION, "pi_1", next_action=NEXT))
    assert s == Settlement(S.REQUIRES_ACTION, "started", 0, 0, None, next_action=NEXT)


@pytest.mark.parametrize("kind,status,attempt", [
    (OutcomeKind.SUCCEEDED, S.SUCCEEDED, "succeeded"),
    (OutcomeKind.AUTHORIZED, S.REQUIRES_CAPTURE, "authorized"),
    (OutcomeKind.DECLINED, S.FAILED, "failed"),
    (OutcomeKind.PENDING, S.PROCESSING, "started"),
    (OutcomeKind.CANCELED, S.CANCELED, "failed"),
], ids=lambda v: getattr(v, "value", v))
def test_settle_from_requires_action(kind, status, attempt):
    s = settle(900, Outcome(kind, "pi_1"), S.REQUIRES_ACTION)
    assert (s.status, s.attempt_status) == (status, attempt)
    assert s.next_action is None  # null in every status but requires_action
    assert EXPECTED_EDGES[(S.REQUIRES_ACTION, _trigger_between(S.REQUIRES_ACTION, s.status))] is status


def _trigger_between(a: Status, b: Status) -> Trigger:
    return next(t for (x, t), y in EXPECTED_EDGES.items() if x is a and y is b)


def test_canceled_from_requires_action_carries_its_reason_only_there():
    s = settle(900, Outcome(OutcomeKind.CANCELED, "pi_1"), S.REQUIRES_ACTION, cancellation_reason="abandoned")
    assert s.status is S.CANCELED
    assert s.cancellation_reason == "abandoned"
    assert s.last_error is None
    assert settle(900, Outcome(OutcomeKind.SUCCEEDED), S.REQUIRES_ACTION, "abandoned").cancellation_reason is None


def test_canceled_while_processing_is_a_failure_not_an_undocumented_edge():
    s = settle(900, Outcome(OutcomeKind.CANCELED, "pi_1"))
    assert s.status is S.FAILED
    assert s.attempt_status == "failed"
    assert s.last_error["code"] == "payment_canceled"


def test_unknown_answer_while_the_customer_acts_moves_nothing():
    assert not moves(S.REQUIRES_ACTION, Outcome(OutcomeKind.UNKNOWN))
    assert settle(900, Outcome(OutcomeKind.UNKNOWN), S.REQUIRES_ACTION).status is S.REQUIRES_ACTION
    for kind in OutcomeKind:
        assert moves(S.PROCESSING, Outcome(kind))
        assert moves(S.REQUIRES_ACTION, Outcome(kind)) is (kind is not OutcomeKind.UNKNOWN)


@pytest.mark.parametrize("status", [s for s in Status if s not in AWAITING_ANSWER], ids=lambda s: s.value)
def test_settle_refuses_a_payment_that_awaits_no_answer(status):
    with pytest.raises(ValueError):
        settle(900, Outcome(OutcomeKind.SUCCEEDED), status)


@settings(max_examples=300, deadline=None)
@given(amount=st.integers(min_value=1, max_value=MAX_AMOUNT), outcome=outcomes,
       current=st.sampled_from(AWAITING_ANSWER), reason=st.none() | st.just("abandoned"))
def test_settle_moves_only_along_the_table(amount, outcome, current, reason):
    s = settle(amount, outcome, current, reason)
    if s.status is not current:
        assert any(EXPECTED_EDGES.get((current, t)) is s.status for t in Trigger), (current, s.status)
    assert (s.next_action is not None) <= (s.status is S.REQUIRES_ACTION)
    assert (s.cancellation_reason is not None) <= (s.status is S.CANCELED)
    assert 0 <= s.amount_received <= amount
    assert 0 <= s.amount_capturable <= amount
    assert (s.amount_received == amount) == (s.status is S.SUCCEEDED)
    assert s.attempt_status in ATTEMPT_STATUSES
