"""domain/ids.py, domain/money.py and domain/cards.py."""

from __future__ import annotations

import json
import time
import types
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from domain import ids
from domain.cards import luhn_ok, truncate
from domain.errors import InvalidRequest
from domain.ids import PREFIXES, has_prefix, new_id
from domain.money import CURRENCIES, MAX_AMOUNT, validate_amount, validate_currency
from app.errors import status_of  # the HTTP status is the edge's mapping

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _decode(body: str) -> int:
    value = 0
    for ch in body:
        value = value * 32 + CROCKFORD.index(ch)
    return value


# ----------------------------------------------------------------------------- ids


def test_documented_prefixes_are_supported():
    # docs/api.md "Conventions" lists these; the module may know more.
    assert {"mer", "ord", "pay", "att", "re", "dp", "evt", "we", "wd", "acct", "txn", "rcn"} <= PREFIXES


@pytest.mark.parametrize("prefix", sorted(PREFIXES))
def test_new_id_has_prefix_and_a_26_char_crockford_body(prefix):
    value = new_id(prefix)
    assert value.startswith(prefix + "_")
    body = value[len(prefix) + 1:]
    assert len(body) == 26
    assert set(body) <= set(CROCKFORD)
    assert has_prefix(value, prefix)


def test_ten_thousand_ids_are_unique_and_strictly_increasing():
    made = [new_id("pay") for _ in range(10_000)]
    assert len(set(made)) == len(made)
    assert all(a < b for a, b in zip(made, made[1:]))
    assert made == sorted(made)


def test_bodies_increase_across_prefixes():
    made = [new_id(p) for p in ("pay", "evt", "ord", "att") * 500]
    bodies = [m.split("_", 1)[1] for m in made]
    assert all(a < b for a, b in zip(bodies, bodies[1:]))


def test_id_body_starts_with_the_current_millisecond():
    before = time.time_ns() // 1_000_000
    body = new_id("pay")[4:]
    after = time.time_ns() // 1_000_000
    value = _decode(body)
    assert value < 1 << 128
    ms = value >> 80
    # Ids made within one millisecond may carry the previous id's millisecond.
    assert before - 1000 <= ms <= after


def test_ids_stay_ordered_when_the_clock_steps_back(monkeypatch):
    real_ms = time.time_ns()
    clock = iter([real_ms + 5_000_000_000, real_ms + 5_000_000_000, real_ms + 1_000_000_000, real_ms])
    fake_time = types.SimpleNamespace(time_ns=lambda: next(clock))
    # Put the generator's memory back afterwards so later ids carry the real time.
    monkeypatch.setattr(ids, "_last_ms", ids._last_ms)
    monkeypatch.setattr(ids, "_last_rand", ids._last_rand)
    monkeypatch.setattr(ids, "time", fake_time)
    made = [new_id("pay") for _ in range(4)]
    assert all(a < b for a, b in zip(made, made[1:]))
    assert len(set(made)) == 4


@given(st.integers(min_value=0, max_value=(1 << 130) - 1))
def test_encoding_is_the_value_in_26_crockford_digits(value):
    assert _decode(ids._encode(value, 26)) == value
    assert len(ids._encode(value, 26)) == 26


def test_a_forked_child_draws_its_own_random_bytes():
    import os

    ids.new_id("pay")  # the parent's pool is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the bytes it would use next, then leave at once
        os.write(write, ids._random80().to_bytes(10, "big"))
        os._exit(0)
    os.close(write)
    child = os.read(read, 10)
    os.waitpid(pid, 0)
    assert child != ids._random80().to_bytes(10, "big")


@pytest.mark.parametrize("prefix", ["", "pay_", "PAY", "payment", "foo", "cus", " pay"])
def test_unknown_prefix_raises(prefix):
    with pytest.raises(ValueError):
        new_id(prefix)


def test_has_prefix_rejects_other_shapes():
    good = new_id("pay")
    assert has_prefix(good, "pay")
    assert not has_prefix(good, "ord")
    assert not has_prefix(good, "pa")
    assert not has_prefix("pay_", "pay")               # empty body
    assert not has_prefix("pay_" + "A" * 65, "pay")    # too long
    assert has_prefix("pay_" + "A" * 64, "pay")
    assert not has_prefix("paybody", "pay")


# --------------------------------------------------------------------------- money


@pytest.mark.parametrize("value", [1, 100, 2500, MAX_AMOUNT])
def test_validate_amount_accepts_positive_integers(value):
    assert validate_amount(value) == value


@pytest.mark.parametrize(
    "value",
    [True, False, 1.0, 100.0, 0.5, 0, -1, -100, MAX_AMOUNT + 1, "100", None, Decimal("100"), [100]],
    ids=repr,
)
def test_validate_amount_rejects(value):
    with pytest.raises(InvalidRequest) as info:
        validate_amount(value)
    err = info.value
    assert err.param == "amount"
    assert err.type == "invalid_request_error"
    assert err.code == "invalid_request"
    assert status_of(err) == 400


def test_validate_amount_names_the_given_param():
    with pytest.raises(InvalidRequest) as info:
        validate_amount(0, param="refund.amount")
    assert info.value.param == "refund.amount"
    assert info.value.to_dict()["error"]["param"] == "refund.amount"


@settings(max_examples=200, deadline=None)
@given(st.integers())
def test_validate_amount_range_property(value):
    if 1 <= value <= MAX_AMOUNT:
        assert validate_amount(value) == value
    else:
        with pytest.raises(InvalidRequest):
            validate_amount(value)


@pytest.mark.parametrize("code", sorted(CURRENCIES))
def test_validate_currency_accepts_supported_codes(code):
    assert validate_currency(code) == code


def test_common_currencies_are_supported():
    assert {"INR", "USD", "EUR", "GBP", "JPY"} <= CURRENCIES
    assert all(len(c) == 3 and c.isupper() and c.isalpha() for c in CURRENCIES)


@pytest.mark.parametrize(
    "value", ["inr", "Inr", "usd", "XXX", "UDS", "", " INR", "INR ", "INRR", None, 356, b"INR", ["INR"]], ids=repr
)
def test_validate_currency_rejects(value):
    with pytest.raises(InvalidRequest) as info:
        validate_currency(value)
    assert info.value.param == "currency"
    assert info.value.type == "invalid_request_error"
    assert status_of(info.value) == 400


def test_validate_currency_names_the_given_param():
    with pytest.raises(InvalidRequest) as info:
        validate_currency("inr", param="account.currency")
    assert info.value.param == "account.currency"


# --------------------------------------------------------------------------- cards

TEST_CARDS = {
    "4242424242424242": ("424242", "4242"),
    "4000000000000002": ("400000", "0002"),
    "4000000000009995": ("400000", "9995"),
    "4000000000000259": ("400000", "0259"),
}


@pytest.mark.parametrize("number", list(TEST_CARDS))
def test_truncate_documented_test_cards(number):
    first6, last4 = TEST_CARDS[number]
    result = truncate(number)
    assert result == {"brand": "visa", "first6": first6, "last4": last4}
    # Nothing beyond first6/last4 survives, in any form.
    assert number not in json.dumps(result)
    assert number not in repr(result)
    assert all(number not in str(v) for v in result.values())
    assert sum(ch.isdigit() for v in result.values() for ch in v) == 10


def test_truncate_accepts_spaces():
    assert truncate("4242 4242 4242 4242") == {"brand": "visa", "first6": "424242", "last4": "4242"}


@pytest.mark.parametrize(
    "number, brand",
    [
        ("5555555555554444", "mastercard"),
        ("378282246310005", "amex"),
        ("371449635398431", "amex"),
        ("340000000000009", "amex"),
        ("6011111111111117", "discover"),
        ("3530111333300000", "unknown"),
        ("4222222222222", "visa"),
    ],
)
def test_truncate_brands(number, brand):
    result = truncate(number)
    assert result == {"brand": brand, "first6": number[:6], "last4": number[-4:]}


@pytest.mark.parametrize("number", ["4242424242424241", "4000000000000001", "1234567812345678"])
def test_bad_luhn_is_incorrect_number(number):
    with pytest.raises(InvalidRequest) as info:
        truncate(number)
    err = info.value
    assert err.code == "incorrect_number"
    assert err.param == "payment_method.card.number"
    assert err.type == "invalid_request_error"
    assert number not in err.message


def _with_check_digit(payload: str) -> str:
    for d in "0123456789":
        if luhn_ok(payload + d):
            return payload + d
    raise AssertionError("no check digit")


@pytest.mark.parametrize("length", [11, 20, 25])
def test_wrong_length_is_incorrect_number_even_if_luhn_passes(length):
    number = _with_check_digit("4" + "0" * (length - 2))
    assert luhn_ok(number)
    with pytest.raises(InvalidRequest) as info:
        truncate(number)
    assert info.value.code == "incorrect_number"


@pytest.mark.parametrize("length", [12, 19])
def test_boundary_lengths_are_accepted(length):
    number = _with_check_digit("4" + "1" * (length - 2))
    assert truncate(number)["last4"] == number[-4:]


@pytest.mark.parametrize("number", ["4242-4242-4242-4242", "4242424242424a42", "", "    ", "+4242424242424242"])
def test_non_digits_are_incorrect_number(number):
    with pytest.raises(InvalidRequest) as info:
        truncate(number)
    assert info.value.code == "incorrect_number"


@pytest.mark.parametrize("number", [4242424242424242, None, b"4242424242424242", ["4242424242424242"]], ids=repr)
def test_non_string_number_is_an_invalid_request(number):
    with pytest.raises(InvalidRequest) as info:
        truncate(number)
    assert info.value.param == "payment_method.card.number"
    assert info.value.code == "invalid_request"


def test_truncate_names_the_given_param():
    with pytest.raises(InvalidRequest) as info:
        truncate("4242424242424241", param="card")
    assert info.value.param == "card"


def test_non_ascii_digits_are_rejected():
    fullwidth = "".join(chr(0xFF10 + int(c)) for c in "4242424242420000")
    with pytest.raises(InvalidRequest) as info:
        truncate(fullwidth)
    assert info.value.code == "incorrect_number"


def test_luhn_known_values():
    assert luhn_ok("79927398713")
    assert not luhn_ok("79927398710")
    assert luhn_ok("0")


digit_strings = st.text(alphabet="0123456789", min_size=11, max_size=18)


@settings(max_examples=200, deadline=None)
@given(payload=digit_strings, data=st.data())
def test_luhn_detects_every_single_digit_error(payload, data):
    number = _with_check_digit(payload)
    assert luhn_ok(number)
    pos = data.draw(st.integers(min_value=0, max_value=len(number) - 1))
    new_digit = data.draw(st.sampled_from([d for d in "0123456789" if d != number[pos]]))
    assert not luhn_ok(number[:pos] + new_digit + number[pos + 1:])


@settings(max_examples=200, deadline=None)
@given(payload=digit_strings)
def test_truncate_keeps_only_first6_and_last4(payload):
    number = _with_check_digit(payload)
    result = truncate(number)
    assert set(result) == {"brand", "first6", "last4"}
    assert result["first6"] == number[:6]
    assert result["last4"] == number[-4:]
    assert result["brand"] in {"visa", "mastercard", "amex", "discover", "unknown"}
    assert number not in json.dumps(result)
