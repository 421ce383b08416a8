"""v1.2 payment methods in domain/: card tokens (domain.cards), what a gateway
may tell of a card, and which connector may be offered which stored method
(domain.routing.accepts): a raw card number never reaches a real connector."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from domain.cards import public_card, truncate, validate_token
from domain.errors import InvalidRequest
from domain.routing import DEFAULT_CONNECTORS, REAL_CONNECTORS, RoutingConfig, accepts, candidates, method_kind

SIMULATORS = ("mockstripe", "mockrazorpay", "flaky")
RAW_CARD = {"type": "card", "card": truncate("4242424242424242")}
TOKEN = {"type": "card", "token": "pm_card_visa"}
CHECKOUT_CARD = {"type": "card"}
CHECKOUT_UPI = {"type": "upi"}
RAW_UPI = {"type": "upi", "upi": {"vpa": "success@upi"}}


@pytest.mark.parametrize("token", ["pm_card_visa", "pm_1Q0PsIJvEtkwdCNYMSaVuRz6", "pm_x"])
def test_valid_tokens(token):
    assert validate_token(token) == token


@pytest.mark.parametrize("token", ["", "pm_", "tok_visa", "4242424242424242", "pm_card visa", "pm_é", None, 42,
                                   "pm_" + "a" * 251, "PM_card_visa"], ids=repr)
def test_invalid_tokens_are_a_400_naming_the_token(token):
    with pytest.raises(InvalidRequest) as info:
        validate_token(token)
    assert info.value.param == "payment_method.token"
    assert info.value.type == "invalid_request_error"


def test_public_card_keeps_only_brand_and_last4():
    assert public_card({"brand": "visa", "last4": "4242", "fingerprint": "x", "exp_year": 2030}) == {
        "brand": "visa", "last4": "4242"}
    assert public_card({"brand": "visa", "last4": "42424242"}) == {"brand": "visa"}
    assert public_card({"number": "4242424242424242"}) is None
    assert public_card(None) is None
    assert public_card("visa") is None


@settings(max_examples=200, deadline=None)
@given(details=st.dictionaries(st.text(max_size=8), st.text(max_size=20) | st.integers(), max_size=6))
def test_public_card_never_keeps_more_than_four_digits(details):
    out = public_card(details)
    if out is not None:
        assert set(out) <= {"brand", "last4"}
        assert len(out.get("last4", "")) in (0, 4)


def test_method_kinds():
    assert method_kind(RAW_CARD) == "raw"
    assert method_kind(RAW_UPI) == "raw"
    assert method_kind(TOKEN) == "token"
    assert method_kind(CHECKOUT_CARD) == "checkout"
    assert method_kind(CHECKOUT_UPI) == "checkout"
    assert method_kind({"type": "netbanking"}) == "raw"  # the simulators take it without details


@pytest.mark.parametrize("connector", sorted(REAL_CONNECTORS))
def test_a_raw_card_number_is_never_offered_to_a_real_connector(connector):
    assert not accepts(connector, RAW_CARD)
    config = RoutingConfig(connectors=(connector, *DEFAULT_CONNECTORS))
    assert connector not in candidates(config, "card", method=RAW_CARD)
    assert candidates(config, "card", method=RAW_CARD) == list(DEFAULT_CONNECTORS)


def test_a_token_goes_to_stripe_only():
    assert accepts("stripe", TOKEN)
    assert not any(accepts(c, TOKEN) for c in ("razorpay", *SIMULATORS))
    config = RoutingConfig(connectors=("mockstripe", "razorpay", "stripe"))
    assert candidates(config, "card", method=TOKEN) == ["stripe"]


def test_a_method_without_details_goes_to_razorpay_only():
    for method in (CHECKOUT_CARD, CHECKOUT_UPI):
        assert accepts("razorpay", method)
        assert not any(accepts(c, method) for c in ("stripe", *SIMULATORS))
    assert candidates(RoutingConfig(), "upi", method=CHECKOUT_UPI) == []
    assert candidates(RoutingConfig(connectors=("mockrazorpay", "razorpay")), "upi", method=CHECKOUT_UPI) == [
        "razorpay"]


def test_simulators_keep_taking_what_they_took():
    for method in (RAW_CARD, RAW_UPI, {"type": "wallet"}, {"type": "netbanking", "netbanking": {"bank": "x"}}):
        assert all(accepts(c, method) for c in SIMULATORS)
        assert candidates(RoutingConfig(), method["type"], method=method) == list(DEFAULT_CONNECTORS)


def test_pinned_is_the_only_candidate_whatever_the_method():
    # A pinned payment is checked at create (400 raw_card_data_not_allowed), not filtered here.
    assert candidates(RoutingConfig(), "card", pinned="stripe", method=RAW_CARD) == ["stripe"]
