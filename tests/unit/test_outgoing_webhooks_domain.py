"""domain/outgoing_webhooks.py: secrets, signatures (checked with the
third-party ``standardwebhooks`` package), endpoint validation, private
hosts, and what an attempt's status means."""

from __future__ import annotations

import base64
import datetime
import json
import time

import pytest
import standardwebhooks
from hypothesis import given, strategies as st

from domain import outgoing_webhooks as ow
from domain.errors import InvalidRequest
from domain.events import EVENT_TYPES


def test_secret_is_whsec_and_standard_base64_of_24_to_64_bytes():
    secrets = {ow.new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) <= 64


@given(st.text(max_size=2000), st.integers(1_000_000_000, 4_000_000_000))
def test_signature_equals_standardwebhooks_own(body, timestamp):
    secret = ow.new_secret()
    raw = body.encode()
    headers = ow.headers(secret, "evt_123", timestamp, raw)
    assert headers["webhook-id"] == "evt_123"
    assert headers["webhook-timestamp"] == str(timestamp)
    when = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    assert headers["webhook-signature"] == standardwebhooks.Webhook(secret).sign("evt_123", when, body)


def test_fresh_headers_verify_end_to_end_with_standardwebhooks():
    secret = ow.new_secret()
    body = json.dumps({"id": "evt_1", "type": "payment.succeeded"}).encode()
    headers = ow.headers(secret, "evt_1", int(time.time()), body)
    assert standardwebhooks.Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(ow.new_secret()).verify(body, headers)
    stale = ow.headers(secret, "evt_1", int(time.time()) - 600, body)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(body, stale)


def test_enabled_events():
    assert ow.validate_enabled_events(["*"]) == ["*"]
    assert ow.validate_enabled_events(["refund.failed", "refund.failed", "payment.created"]) == [
        "refund.failed", "payment.created"]
    for bad in ([], ["payment.*"], ["nope"], "payment.created", [1], None):
        with pytest.raises(InvalidRequest) as err:
            ow.validate_enabled_events(bad)
        assert err.value.param == "enabled_events"
    for event_type in EVENT_TYPES:
        assert ow.matches(["*"], event_type)
        assert ow.matches([event_type], event_type)
        assert not ow.matches(["account.deposit.completed"], event_type) or event_type == "account.deposit.completed"


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/x", "https://hooks.example.com/paycast?x=1",
                                 "http://[::1]:9/", "https://93.184.216.34/"])
def test_valid_urls(url):
    assert ow.validate_url(url)[0] == url


@pytest.mark.parametrize("url", ["", "ftp://x/", "http://", "//x/y", "http://a:b@x/", "http://x:99999/",
                                 "x" * 3000, "javascript:alert(1)"])
def test_invalid_urls(url):
    with pytest.raises(InvalidRequest) as err:
        ow.validate_url(url)
    assert err.value.param == "url"


@pytest.mark.parametrize("host, kind", [
    ("127.0.0.1", "private"), ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("169.254.169.254", "private"), ("100.64.0.1", "private"), ("0.0.0.0", "private"), ("::1", "private"),
    ("[::1]", "private"), ("fd00::1", "private"), ("fe80::1", "private"), ("::ffff:127.0.0.1", "private"),
    ("224.0.0.1", "private"), ("localhost", "private"), ("LOCALHOST.", "private"), ("api.localhost", "private"),
    ("printer.local", "private"), ("93.184.216.34", "public"), ("2606:4700::1111", "public"),
    ("hooks.example.com", "name"),
])
def test_classify_host(host, kind):
    assert ow.classify_host(host).value == kind


@pytest.mark.parametrize("status, verdict", [(200, "succeeded"), (204, "succeeded"), (299, "succeeded"),
                                             (410, "disable"), (301, "retry"), (404, "retry"), (500, "retry"),
                                             (None, "retry")])
def test_verdict(status, verdict):
    assert ow.verdict(status).value == verdict


def test_after_failure_follows_the_schedule_then_gives_up():
    schedule = [0, 5, 300]
    assert ow.after_failure(1, 3, schedule).delay_s == 5
    assert ow.after_failure(2, 3, schedule).delay_s == 300
    assert ow.after_failure(3, 3, schedule).delay_s is None
    # A manual retry allows one more attempt past the schedule; its retry uses the last delay.
    assert ow.after_failure(3, 4, schedule).delay_s == 300
    assert ow.after_failure(4, 4, schedule).delay_s is None
