"""domain.connector_accounts: masks and request validation (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from domain import connector_accounts as rules
from domain.errors import InvalidRequest


@pytest.mark.parametrize(("connector", "credentials", "shown"), [
    ("stripe", {"secret_key": "sk_test_51HxAbCdEfGhIjKlMn4242"}, {"secret_key": "sk_test_…4242"}),
    ("stripe", {"secret_key": "rk_live_51HxAbCdEfGhIjKlMnZZ99"}, {"secret_key": "rk_live_…ZZ99"}),
    ("razorpay", {"key_id": "rzp_test_1DP5mmOlF5G5ag", "key_secret": "thesecretpart"},
     {"key_id": "rzp_test_…G5ag"}),
    # Too short to keep 4 characters hidden: the prefix only.
    ("stripe", {"secret_key": "sk_test_short"}, {"secret_key": "sk_test_…"}),
])
def test_mask_is_prefix_and_last_four(connector, credentials, shown):
    assert rules.mask(connector, credentials) == shown


@given(st.text(alphabet=st.characters(codec="ascii", exclude_categories=("Cc", "Zs")), min_size=1, max_size=80))
def test_mask_never_shows_more_than_four_characters_after_the_prefix(rest):
    key = "sk_test_" + rest
    shown = rules.mask("stripe", {"secret_key": key})["secret_key"]
    prefix, _, tail = shown.partition("…")
    assert key.startswith(prefix)
    assert key.endswith(tail)
    assert len(tail) <= 4
    hidden = len(key) - len(prefix) - len(tail)
    assert hidden >= 8 or tail == ""


def test_parse_create_keeps_the_fields_and_checks_key_forms():
    change = rules.parse_create({"connector": "razorpay", "label": None, "webhook_secret": "whs",
                                 "credentials": {"key_id": "rzp_test_abc", "key_secret": "s3cret"}})
    assert (change.connector, change.credentials, change.webhook_secret, change.label) == \
        ("razorpay", {"key_id": "rzp_test_abc", "key_secret": "s3cret"}, "whs", None)
    with pytest.raises(InvalidRequest) as caught:
        rules.parse_create({"connector": "stripe", "webhook_secret": "w",
                            "credentials": {"secret_key": "pk_test_notasecretkey"}})
    assert caught.value.param == "credentials.secret_key"
    assert "pk_test_notasecretkey" not in caught.value.message


def test_parse_update_leaves_out_what_is_absent():
    change = rules.parse_update("stripe", {"webhook_secret": "whsec_new"})
    assert change.credentials is None
    assert change.webhook_secret == "whsec_new"
    assert change.label is ...
    assert rules.parse_update("stripe", {"label": None}).label is None
    with pytest.raises(InvalidRequest) as caught:
        rules.parse_update("stripe", {"connector": "razorpay"})
    assert caught.value.code == "parameter_unknown"
    assert caught.value.param == "connector"


def test_credential_fields_match_the_connector_classes():
    from gateways.razorpay import RazorpayConnector
    from gateways.stripe import StripeConnector

    assert StripeConnector.credential_fields == rules.CREDENTIAL_FIELDS["stripe"]
    assert RazorpayConnector.credential_fields == rules.CREDENTIAL_FIELDS["razorpay"]
