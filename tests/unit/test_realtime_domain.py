"""domain.realtime: tokens, client frames, routing rules and NOTIFY payloads."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import FrameRejected, InvalidToken, TokenExpired
from domain.realtime import (NOTIFY_LIMIT, Ack, Claims, Message, Pong, Subscribe, Unsubscribe, decode_notice,
                             encode_notice, event_frame, parse_client_frame, sign_token, topic_of, verify_token,
                             visible)

KEY = b"k" * 32


def test_token_round_trip_and_expiry():
    claims = Claims("mer_1", "cus_1", "phone", 2_000)
    token = sign_token(KEY, claims)
    assert token.startswith("rt1.")
    assert verify_token(KEY, token, now=1_999.5) == claims
    with pytest.raises(TokenExpired):
        verify_token(KEY, token, now=2_000)


@pytest.mark.parametrize("token", ["", "rt1", "rt1.a.b.c", "rt2.e30.x", "x" * 5000, "rt1.!!!.AAAA"])
def test_malformed_tokens_are_invalid(token):
    with pytest.raises(InvalidToken):
        verify_token(KEY, token, now=0)


def test_a_token_signed_with_another_key_or_altered_is_invalid():
    token = sign_token(KEY, Claims("mer_1", "cus_1", None, 10**10))
    with pytest.raises(InvalidToken):
        verify_token(b"other" * 8, token, now=0)
    head, body, mac = token.split(".")
    forged = sign_token(b"other" * 8, Claims("mer_2", "cus_1", None, 10**10)).split(".")[1]
    with pytest.raises(InvalidToken):
        verify_token(KEY, f"{head}.{forged}.{mac}", now=0)


def test_a_well_signed_token_with_bad_claims_is_invalid():
    import base64
    import hashlib
    import hmac

    body = base64.urlsafe_b64encode(b'{"m": "mer_1"}').rstrip(b"=").decode()
    mac = base64.urlsafe_b64encode(hmac.new(KEY, f"rt1.{body}".encode(), hashlib.sha256).digest()).rstrip(b"=")
    with pytest.raises(InvalidToken):
        verify_token(KEY, f"rt1.{body}.{mac.decode()}", now=0)


@pytest.mark.parametrize("raw, expected", [
    ('{"type": "subscribe", "topic": "payment:pay_01ABC"}', Subscribe("payment:pay_01ABC")),
    ('{"type": "unsubscribe", "topic": "order:ord_1"}', Unsubscribe("order:ord_1")),
    ('{"type": "ack", "seq": 0}', Ack(0)),
    ('{"type": "pong"}', Pong()),
])
def test_valid_client_frames(raw, expected):
    assert parse_client_frame(raw, 4096) == expected


@pytest.mark.parametrize("raw, code", [
    (b"\x00", "binary_not_supported"),
    ("x" * 5000, "frame_too_large"),
    ("{", "invalid_json"),
    ("[" * 3000, "invalid_json"),
    ("1", "invalid_frame"),
    ('{"type": 1}', "unknown_type"),
    ('{"type": "subscribe", "topic": "account:acct_1"}', "invalid_topic"),
    ('{"type": "subscribe", "topic": "payment:a b"}', "invalid_topic"),
    ('{"type": "ack", "seq": -1}', "invalid_frame"),
    ('{"type": "ack", "seq": 1.5}', "invalid_frame"),
])
def test_invalid_client_frames_name_their_problem(raw, code):
    with pytest.raises(FrameRejected) as info:
        parse_client_frame(raw, 4096)
    assert info.value.code == code


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["type", "topic", "seq", "x"]),
                                                                inner, max_size=4),
    max_leaves=20).map(json.dumps)))
def test_any_frame_parses_or_is_rejected_with_a_code(raw):
    try:
        parse_client_frame(raw, 4096)
    except FrameRejected as exc:
        assert exc.code
        assert exc.message


def test_topics_and_visibility():
    assert topic_of("payment.succeeded", "pay_1") == "payment:pay_1"
    assert topic_of("account.deposit.completed", "txn_1") == "account:txn_1"
    assert topic_of("refund.succeeded", "re_1") == "refund:re_1"
    assert topic_of("dispute.opened", "dp_1") == "dispute:dp_1"
    assert topic_of("merchant.updated", "mer_1") is None
    assert visible("phone", set(), None, "t")
    assert visible("phone", set(), "phone", "t")
    assert not visible("phone", set(), "laptop", "t")
    assert not visible(None, set(), "laptop", "t")
    assert not visible("phone", {"t"}, None, "t")


def _messages(first: int, n: int, size: int = 10) -> list[Message]:
    return [Message(first + i, f"payment:pay_{i}", None if i % 2 else "dev", event_frame(first + i, "t", "x" * size))
            for i in range(n)]


def test_small_notices_carry_their_frames_and_large_ones_only_the_range():
    small = _messages(5, 3)
    notice = decode_notice(encode_notice("mer_1", "cus\n1", small))
    assert (notice.merchant_id, notice.client_id, notice.first, notice.last) == ("mer_1", "cus\n1", 5, 7)
    assert notice.messages == tuple(small)
    large = encode_notice("mer_1", "cus_1", _messages(1, 2, size=NOTIFY_LIMIT))
    assert len(large.encode()) < NOTIFY_LIMIT
    big = decode_notice(large)
    assert (big.first, big.last, big.messages) == (1, 2, None)


def test_a_notice_whose_frames_do_not_match_its_range_is_refused():
    payload = encode_notice("mer_1", "cus_1", _messages(1, 2))
    with pytest.raises(ValueError):
        decode_notice(payload.rsplit("\n", 1)[0])


def test_tokens_carry_their_issue_time_and_a_deleted_device_refuses_older_ones():
    from domain.realtime import Revoke, decode_notice, encode_revoke, revoked_token
    secret = b"k" * 32
    claims = Claims("mer_1", "cus_1", "phone", 2_000_000_000, 1_700_000_000_123)
    back = verify_token(secret, sign_token(secret, claims), 1_700_000_000)
    assert back == claims
    assert revoked_token(back, 1_700_000_000_124)
    assert not revoked_token(back, 1_700_000_000_123)
    assert not revoked_token(back, None)
    assert not revoked_token(Claims("mer_1", "cus_1", None, 2_000_000_000, 0), 1_700_000_000_124)
    assert decode_notice(encode_revoke("mer_1", "cus_1", "phone")) == Revoke("mer_1", "cus_1", "phone")
