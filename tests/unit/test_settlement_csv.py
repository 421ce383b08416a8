"""Settlement CSV parsing (domain/settlement.py): what it reads, and that any text
either parses or is refused with ``InvalidRequest`` — never another exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import settlement
from domain.errors import InvalidRequest

HEADER = "connector_txn_id,amount,currency,status\n"


def test_rows_are_read_trimmed_and_normalised():
    text = HEADER + " pi_1 , 1000 ,inr, Succeeded\r\npi_2,-5,USD,failed\n"
    assert settlement.parse_csv(text) == [
        {"connector_txn_id": "pi_1", "amount": 1000, "currency": "INR", "status": "succeeded"},
        {"connector_txn_id": "pi_2", "amount": -5, "currency": "USD", "status": "failed"},
    ]


@pytest.mark.parametrize("text, line", [
    ("\rnot,a,header", 1),
    (HEADER + "pi_1,1\r2,INR,succeeded\n", 2),
    (HEADER + 'pi_1,"' + "9" * 200_000 + '",INR,succeeded\n', 2),
])
def test_text_the_csv_module_cannot_read_is_refused_with_its_line(text, line):
    with pytest.raises(InvalidRequest, match=f"^Line {line}: the CSV cannot be read"):
        settlement.parse_csv(text)


@pytest.mark.parametrize("amount", ["¹", "٣", "--5", "-", "1.5", "1e3", "9" * 19])
def test_an_amount_is_ascii_digits_that_fit_a_bigint(amount):
    with pytest.raises(InvalidRequest, match="integer amount"):
        settlement.parse_csv(HEADER + f"pi_1,{amount},INR,succeeded\n")


@given(st.text(max_size=300), st.booleans())
def test_any_text_parses_or_is_refused(text, with_header):
    try:
        rows = settlement.parse_csv((HEADER if with_header else "") + text)
    except InvalidRequest:
        return
    assert all(isinstance(r["amount"], int) and abs(r["amount"]) < 10**18 for r in rows)
