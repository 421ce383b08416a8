"""domain/latency.py and domain/rollups.py: fixed-bucket histograms and the fold of payment snapshots."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain import latency, rollups

T0 = dt.datetime(2026, 12, 6, 10, 59, 59, 999000, tzinfo=dt.timezone.utc)


# --------------------------------------------------------------------------- latency


def test_bucket_of_uses_upper_bounds_inclusive():
    assert latency.bucket_of(0.0) == latency.bucket_of(1) == "1"
    assert latency.bucket_of(1.0001) == "2.5"
    assert latency.bucket_of(30000) == "30000"
    assert latency.bucket_of(30000.1) == latency.INF


def test_quantile_interpolates_inside_the_bucket_like_prometheus():
    # 10 values in (0, 1], 10 in (1, 2.5]: the median is the top of the first bucket,
    # the 75th percentile half way through the second.
    h = {"1": 10, "2.5": 10}
    assert latency.quantile(0.5, h) == pytest.approx(1.0)
    assert latency.quantile(0.75, h) == pytest.approx(1.75)
    assert latency.quantile(0.5, {}) is None
    assert latency.quantile(0.99, {latency.INF: 3}) == latency.BOUNDS_MS[-1]
    with pytest.raises(ValueError):
        latency.quantile(1.5, h)


latencies = st.lists(st.floats(min_value=0, max_value=60000, allow_nan=False), max_size=50)


@given(latencies, latencies)
def test_merged_histograms_equal_the_histogram_of_all_values(a, b):
    def hist(values):
        out = {}
        for v in values:
            out[latency.bucket_of(v)] = out.get(latency.bucket_of(v), 0) + 1
        return out

    assert latency.merge(hist(a), hist(b)) == hist(a + b)


@given(latencies, st.floats(min_value=0, max_value=1))
def test_quantile_lies_within_the_bucket_of_the_true_value(values, q):
    h = latency.merge(*({latency.bucket_of(v): 1} for v in values))
    estimate = latency.quantile(q, h)
    if not values:
        assert estimate is None
        return
    assert 0 <= estimate <= latency.BOUNDS_MS[-1]
    assert latency.quantile(0, h) <= estimate <= latency.quantile(1, h)


# --------------------------------------------------------------------------- the fold


def snap(status: str, attempts=(), created=T0) -> dict:
    return {"status": status, "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.") + "999Z",
            "attempts": [{"id": i, "connector": c, "status": s,
                          "created_at": (created + dt.timedelta(seconds=1)).isoformat()} for i, c, s in attempts]}


def test_a_payment_moves_between_statuses_and_its_attempt_is_timed_once():
    tally = rollups.Tally()
    history = [snap("requires_confirmation"), snap("processing", [("a1", "flaky", "started")]),
               snap("processing", [("a1", "flaky", "failed"), ("a2", "mockstripe", "started")]),
               snap("succeeded", [("a1", "flaky", "failed"), ("a2", "mockstripe", "succeeded")]),
               snap("succeeded", [("a1", "flaky", "failed"), ("a2", "mockstripe", "succeeded")])]
    previous = None
    for s in history:
        tally.fold(previous, s, {"a1": 3.0, "a2": 40.0})
        previous = s
    counts = {k: n for k, n in tally.counts.items() if n}
    minute = rollups.bucket_start(T0, rollups.MINUTE)
    # The payment was created in the 10:59 bucket; its attempts a second later, in the 11:00 one.
    assert counts[(60, minute, "payment", "", "succeeded")] == 1
    next_minute = minute + dt.timedelta(minutes=1)
    assert counts[(60, next_minute, "attempt", "flaky", "failed")] == 1
    assert counts[(60, next_minute, "latency", "flaky", "5")] == 1
    assert counts[(60, next_minute, "latency", "mockstripe", "50")] == 1
    assert counts[(0, rollups.EPOCH, "payment", "", "succeeded")] == 1
    assert counts[(3600, rollups.bucket_start(next_minute, 3600), "attempt", "mockstripe", "succeeded")] == 1
    assert sum(n for k, n in counts.items() if k[0] == 0 and k[2] == "payment") == 1
    assert sum(n for k, n in counts.items() if k[0] == 0 and k[2] == "latency") == 2


def test_a_status_the_fold_never_heard_of_is_counted_as_any_other():
    tally = rollups.Tally()
    tally.fold(None, snap("processing"), {})
    tally.fold(snap("processing"), snap("requires_action"), {})
    assert tally.counts[(0, rollups.EPOCH, "payment", "", "requires_action")] == 1
    assert tally.counts[(0, rollups.EPOCH, "payment", "", "processing")] == 0


statuses = st.sampled_from(["requires_confirmation", "processing", "requires_capture", "succeeded", "failed",
                            "canceled", "requires_action"])


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 4), statuses), min_size=1, max_size=40), st.integers(0, 40))
def test_folding_a_log_in_two_stretches_equals_folding_it_whole(log, split):
    """What makes catching up and rebuilding exact: the counts are sums of per-event deltas."""
    def fold(stretches):
        tally = rollups.Tally()
        last: dict = {}
        for stretch in stretches:
            for payment, status in stretch:
                s = snap(status, created=T0 + dt.timedelta(minutes=payment * 37))
                tally.fold(last.get(payment), s, {})
                last[payment] = s
        return {k: n for k, n in tally.counts.items() if n}

    whole = fold([log])
    assert fold([log[:split], log[split:]]) == whole
    # ... and it is the count of each payment's last status.
    final = {payment: status for payment, status in log}
    assert sum(n for k, n in whole.items() if k[0] == 0) == len(final)
    for status in set(final.values()):
        assert whole[(0, rollups.EPOCH, "payment", "", status)] == list(final.values()).count(status)


attempt_statuses = st.sampled_from(["started", "unknown", "failed", "succeeded", "authorized"])


@settings(max_examples=300)
@given(st.lists(st.lists(st.tuples(st.sampled_from(["a1", "a2"]), attempt_statuses), max_size=2,
                         unique_by=lambda t: t[0]), min_size=1, max_size=12))
def test_out_of_order_snapshots_never_count_an_attempt_twice(history):
    """Two writers may append a payment's snapshots out of order (a slower one shows an attempt
    ``started`` after a faster one ended it, or misses an attempt begun since): whatever the
    order, each attempt is counted once, in the status (and latency) of the last snapshot
    that shows it."""
    tally = rollups.Tally()
    latency_ms = {"a1": 3.0, "a2": 40.0}
    previous = None
    for attempts in history:
        current = snap("processing", [(i, "flaky", s) for i, s in attempts])
        tally.fold(previous, current, latency_ms)
        previous = rollups.merge(previous, current)
    counts = {k[2:]: n for k, n in tally.counts.items() if n and k[0] == rollups.ALL_TIME}
    expected: dict = {("payment", "", "processing"): 1}
    last_seen = {i: s for attempts in history for i, s in attempts}
    for i, s in last_seen.items():
        expected[("attempt", "flaky", s)] = expected.get(("attempt", "flaky", s), 0) + 1
        if s != "started":
            key = ("latency", "flaky", latency.bucket_of(latency_ms[i]))
            expected[key] = expected.get(key, 0) + 1
    assert counts == expected
