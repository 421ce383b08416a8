"""domain/routing.py (connector candidates, config validation) and
domain/breaker.py (per-connector circuit breaker, time passed in)."""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import given, settings, strategies as st

from domain.breaker import BreakerPolicy, CircuitBreaker
from domain.errors import InvalidRequest
from domain.routing import DEFAULT_CONNECTORS, STRATEGIES, RoutingConfig, Rule, candidates
from app.errors import status_of  # the HTTP status is the edge's mapping

KNOWN = frozenset({"mockstripe", "mockrazorpay", "flaky"})
ALL3 = ("mockstripe", "mockrazorpay", "flaky")


def cfg(**data) -> RoutingConfig:
    return RoutingConfig.from_dict(data, KNOWN)


# ------------------------------------------------------------------------- config


def test_default_config():
    default = RoutingConfig()
    assert default.strategy == "priority"
    assert default.connectors == DEFAULT_CONNECTORS == ("mockstripe", "mockrazorpay")
    assert default.weights == {}
    assert default.rules == ()
    assert RoutingConfig.from_dict(None, KNOWN) == default
    assert RoutingConfig.from_dict({}, KNOWN) == default
    assert STRATEGIES == ("priority", "volume_split", "success_rate")


def test_from_dict_builds_every_field():
    c = cfg(strategy="volume_split", connectors=["flaky", "mockstripe"], weights={"flaky": 1, "mockstripe": 3},
            rules=[{"payment_method_type": "upi", "connectors": ["mockrazorpay"]}])
    assert c.strategy == "volume_split"
    assert c.connectors == ("flaky", "mockstripe")
    assert c.weights == {"flaky": 1, "mockstripe": 3}
    assert c.rules == (Rule("upi", ("mockrazorpay",)),)


def test_to_dict_round_trips():
    data = {"strategy": "success_rate", "connectors": ["mockrazorpay", "mockstripe"],
            "weights": {"mockstripe": 2}, "rules": [{"payment_method_type": "card", "connectors": ["flaky"]}]}
    c = RoutingConfig.from_dict(data, KNOWN)
    out = c.to_dict()
    assert out == {"object": "routing", **data}
    assert RoutingConfig.from_dict(out, KNOWN) == c


def test_empty_connectors_fall_back_to_the_defaults():
    assert cfg(connectors=[]).connectors == DEFAULT_CONNECTORS


@pytest.mark.parametrize(
    "data, param",
    [
        ({"strategy": "round_robin"}, "strategy"),
        ({"strategy": ""}, "strategy"),
        ({"strategy": None}, "strategy"),
        ({"strategy": "PRIORITY"}, "strategy"),
        ({"connectors": ["mockstripe", "stripe"]}, "connectors"),
        ({"connectors": "mockstripe"}, "connectors"),
        ({"connectors": False}, "connectors"),
        ({"connectors": {}}, "connectors"),
        ({"weights": []}, "weights"),
        ({"weights": False}, "weights"),
        ({"rules": {}}, "rules"),
        ({"rules": 0}, "rules"),
        ({"weights": {"nope": 1}}, "weights"),
        ({"weights": {"mockstripe": -1}}, "weights"),
        ({"weights": {"mockstripe": True}}, "weights"),
        ({"weights": {"mockstripe": 1.5}}, "weights"),
        ({"weights": {"mockstripe": "3"}}, "weights"),
        ({"weights": {"mockstripe": None}}, "weights"),
        ({"weights": {"mockstripe": 2**53}}, "weights"),
        ({"weights": {"mockstripe": 1e300}}, "weights"),
        ({"rules": [{"connectors": ["mockstripe"]}]}, "rules.0"),
        ({"rules": [{"payment_method_type": "card"}]}, "rules.0"),
        ({"rules": [{"payment_method_type": "card", "connectors": []}]}, "rules.0"),
        ({"rules": ["card"]}, "rules.0"),
        ({"rules": [{"payment_method_type": "card", "connectors": ["mockstripe"]},
                    {"payment_method_type": "upi"}]}, "rules.1"),
        ({"rules": [{"payment_method_type": "card", "connectors": ["mockstripe"]},
                    {"payment_method_type": "upi", "connectors": ["nope"]}]}, "rules.1.connectors"),
    ],
    ids=repr,
)
def test_from_dict_validation_names_the_param(data, param):
    with pytest.raises(InvalidRequest) as info:
        RoutingConfig.from_dict(data, KNOWN)
    assert info.value.param == param
    assert info.value.type == "invalid_request_error"
    assert status_of(info.value) == 400


def test_an_integer_valued_weight_is_its_integer_and_the_largest_is_kept():
    # JSON has one number type: 70.0 is the integer 70, as for every integer of the API.
    config = cfg(strategy="volume_split", weights={"mockstripe": 70.0, "mockrazorpay": 2**53 - 1})
    assert config.weights == {"mockstripe": 70, "mockrazorpay": 2**53 - 1}
    assert type(config.weights["mockstripe"]) is int


def test_zero_weight_is_allowed():
    assert cfg(weights={"mockstripe": 0}).weights == {"mockstripe": 0}


def test_known_set_is_what_decides():
    with pytest.raises(InvalidRequest):
        RoutingConfig.from_dict({"connectors": ["flaky"]}, frozenset({"mockstripe"}))


@pytest.mark.parametrize(
    "data, param",
    [
        ({"weights": ["mockstripe"]}, "weights"),
        ({"connectors": 5}, "connectors"),
        ({"rules": 5}, "rules"),
        ({"rules": [{"payment_method_type": "card", "connectors": [["mockstripe"]]}]}, "rules.0.connectors"),
    ],
    ids=repr,
)
def test_from_dict_rejects_wrongly_typed_fields_with_invalid_request(data, param):
    with pytest.raises(InvalidRequest) as info:
        RoutingConfig.from_dict(data, KNOWN)
    assert info.value.param.startswith(param)


# --------------------------------------------------------------------- candidates


def test_priority_keeps_the_configured_order():
    assert candidates(RoutingConfig(), "card") == ["mockstripe", "mockrazorpay"]
    assert candidates(cfg(connectors=["flaky", "mockrazorpay", "mockstripe"]), "card") == [
        "flaky", "mockrazorpay", "mockstripe"]


def test_duplicates_are_tried_once():
    c = cfg(connectors=["mockstripe", "flaky", "mockstripe", "flaky"])
    assert candidates(c, "card") == ["mockstripe", "flaky"]


def test_pinned_connector_is_the_only_candidate():
    c = cfg(connectors=list(ALL3), rules=[{"payment_method_type": "card", "connectors": ["mockstripe"]}])
    assert candidates(c, "card", pinned="mockrazorpay") == ["mockrazorpay"]
    # Even when its circuit is open: the merchant asked for it.
    assert candidates(c, "card", pinned="flaky", unavailable=frozenset({"flaky"})) == ["flaky"]


def test_empty_pin_means_not_pinned():
    assert candidates(RoutingConfig(), "card", pinned="") == list(DEFAULT_CONNECTORS)
    assert candidates(RoutingConfig(), "card", pinned=None) == list(DEFAULT_CONNECTORS)


def test_per_method_rules():
    c = cfg(connectors=["mockstripe", "mockrazorpay"],
            rules=[{"payment_method_type": "upi", "connectors": ["mockrazorpay", "flaky"]},
                   {"payment_method_type": "wallet", "connectors": ["flaky"]}])
    assert candidates(c, "upi") == ["mockrazorpay", "flaky"]
    assert candidates(c, "wallet") == ["flaky"]
    assert candidates(c, "card") == ["mockstripe", "mockrazorpay"]
    assert candidates(c, "netbanking") == ["mockstripe", "mockrazorpay"]


def test_first_matching_rule_wins():
    c = cfg(rules=[{"payment_method_type": "upi", "connectors": ["flaky"]},
                   {"payment_method_type": "upi", "connectors": ["mockstripe"]}])
    assert candidates(c, "upi") == ["flaky"]


def _first_choice_shares(config, draws=2000, seed=1234, method="card"):
    rng = random.Random(seed)
    counts = collections.Counter(candidates(config, method, rng=rng)[0] for _ in range(draws))
    return {name: n / draws for name, n in counts.items()}


def test_volume_split_two_connectors_follow_the_weights():
    c = cfg(strategy="volume_split", connectors=["mockstripe", "mockrazorpay"],
            weights={"mockstripe": 70, "mockrazorpay": 30})
    shares = _first_choice_shares(c)
    assert shares["mockstripe"] == pytest.approx(0.70, abs=0.05)
    assert shares["mockrazorpay"] == pytest.approx(0.30, abs=0.05)


@pytest.mark.parametrize("seed", [1, 7, 2024])
def test_volume_split_three_connectors_follow_the_weights(seed):
    c = cfg(strategy="volume_split", connectors=list(ALL3),
            weights={"mockstripe": 50, "mockrazorpay": 30, "flaky": 20})
    shares = _first_choice_shares(c, seed=seed)
    assert shares.get("mockstripe", 0) == pytest.approx(0.50, abs=0.05)
    assert shares.get("mockrazorpay", 0) == pytest.approx(0.30, abs=0.05)
    assert shares.get("flaky", 0) == pytest.approx(0.20, abs=0.05)


def test_volume_split_is_deterministic_for_a_seed_and_always_a_permutation():
    c = cfg(strategy="volume_split", connectors=list(ALL3), weights={"mockstripe": 5, "mockrazorpay": 3, "flaky": 2})
    a = [candidates(c, "card", rng=random.Random(99)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = random.Random(5)
    for _ in range(500):
        got = candidates(c, "card", rng=rng)
        assert sorted(got) == sorted(ALL3)


def test_volume_split_zero_weight_and_unweighted_go_last():
    c = cfg(strategy="volume_split", connectors=["flaky", "mockstripe", "mockrazorpay"],
            weights={"mockstripe": 1, "flaky": 0})
    rng = random.Random(3)
    for _ in range(200):
        got = candidates(c, "card", rng=rng)
        assert got[0] == "mockstripe"
        # Zero/absent weights keep their configured relative order after the weighted ones.
        assert got[1:] == ["flaky", "mockrazorpay"]


def test_volume_split_all_zero_weights_keeps_configured_order():
    c = cfg(strategy="volume_split", connectors=["mockrazorpay", "mockstripe"],
            weights={"mockstripe": 0, "mockrazorpay": 0})
    assert candidates(c, "card", rng=random.Random(0)) == ["mockrazorpay", "mockstripe"]


def test_volume_split_without_weights_is_priority():
    c = cfg(strategy="volume_split", connectors=["mockrazorpay", "mockstripe"])
    for seed in range(20):
        assert candidates(c, "card", rng=random.Random(seed)) == ["mockrazorpay", "mockstripe"]


def test_volume_split_applies_to_rule_connectors():
    c = cfg(strategy="volume_split", weights={"flaky": 1, "mockrazorpay": 0},
            rules=[{"payment_method_type": "upi", "connectors": ["mockrazorpay", "flaky"]}])
    assert candidates(c, "upi", rng=random.Random(1)) == ["flaky", "mockrazorpay"]


def test_success_rate_orders_best_first():
    c = cfg(strategy="success_rate", connectors=list(ALL3))
    rates = {"mockstripe": 0.5, "mockrazorpay": 0.99, "flaky": 0.7}
    assert candidates(c, "card", success_rates=rates) == ["mockrazorpay", "flaky", "mockstripe"]


def test_success_rate_unknown_counts_as_perfect_and_ties_keep_order():
    c = cfg(strategy="success_rate", connectors=list(ALL3))
    assert candidates(c, "card", success_rates={"mockstripe": 0.9}) == ["mockrazorpay", "flaky", "mockstripe"]
    tie = {"mockstripe": 0.8, "mockrazorpay": 0.8, "flaky": 0.8}
    assert candidates(c, "card", success_rates=tie) == list(ALL3)


def test_success_rate_without_rates_is_priority():
    c = cfg(strategy="success_rate", connectors=["flaky", "mockstripe"])
    assert candidates(c, "card") == ["flaky", "mockstripe"]
    assert candidates(c, "card", success_rates={}) == ["flaky", "mockstripe"]


def test_success_rates_are_ignored_by_priority():
    c = cfg(connectors=["mockstripe", "mockrazorpay"])
    assert candidates(c, "card", success_rates={"mockstripe": 0.0, "mockrazorpay": 1.0}) == [
        "mockstripe", "mockrazorpay"]


def test_unavailable_connectors_are_skipped():
    c = cfg(connectors=list(ALL3))
    assert candidates(c, "card", unavailable=frozenset({"mockstripe"})) == ["mockrazorpay", "flaky"]
    assert candidates(c, "card", unavailable=frozenset({"mockstripe", "mockrazorpay"})) == ["flaky"]


def test_all_unavailable_still_returns_everything():
    c = cfg(connectors=list(ALL3))
    assert candidates(c, "card", unavailable=frozenset(ALL3)) == list(ALL3)


def test_unavailable_skipped_after_success_rate_ordering():
    c = cfg(strategy="success_rate", connectors=list(ALL3))
    rates = {"mockstripe": 0.1, "mockrazorpay": 0.99, "flaky": 0.5}
    got = candidates(c, "card", success_rates=rates, unavailable=frozenset({"mockrazorpay"}))
    assert got == ["flaky", "mockstripe"]


def test_unavailable_skipped_with_volume_split():
    c = cfg(strategy="volume_split", connectors=list(ALL3), weights={"mockstripe": 100, "mockrazorpay": 1, "flaky": 1})
    rng = random.Random(11)
    for _ in range(200):
        assert "mockstripe" not in candidates(c, "card", rng=rng, unavailable=frozenset({"mockstripe"}))


configs = st.builds(
    lambda strategy, conns, weights: RoutingConfig(strategy, tuple(conns), weights),
    st.sampled_from(STRATEGIES),
    st.lists(st.sampled_from(ALL3), min_size=1, max_size=5),
    st.dictionaries(st.sampled_from(ALL3), st.integers(min_value=0, max_value=100), max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(config=configs, unavailable=st.frozensets(st.sampled_from(ALL3)),
       rates=st.dictionaries(st.sampled_from(ALL3), st.floats(0, 1)), seed=st.integers(0, 2**32))
def test_candidates_are_the_healthy_ones_or_all_when_none_is(config, unavailable, rates, seed):
    got = candidates(config, "card", unavailable=unavailable, success_rates=rates, rng=random.Random(seed))
    assert got
    assert len(got) == len(set(got))
    healthy = set(config.connectors) - unavailable
    assert set(got) == (healthy or set(config.connectors))


# ------------------------------------------------------------------------ breaker

POLICY = BreakerPolicy(window=20, min_calls=10, failure_threshold=0.5, open_seconds=10.0)


def test_default_policy():
    p = BreakerPolicy()
    assert (p.window, p.min_calls, p.failure_threshold, p.open_seconds) == (50, 10, 0.5, 10.0)


def test_fresh_breaker_is_closed():
    b = CircuitBreaker("mockstripe")
    assert b.state(0.0) == "closed"
    assert b.allow(0.0)
    assert b.allow(0.0)
    assert b.snapshot(0.0) == {"object": "connector", "name": "mockstripe", "state": "closed",
                               "success_rate": 1.0, "latency_ms_p50": None, "attempts": 0}


def test_failures_below_min_calls_do_not_open():
    b = CircuitBreaker("x", POLICY)
    for i in range(POLICY.min_calls - 1):
        b.record(False, 0.01, float(i))
    assert b.state(100.0) == "closed"
    assert b.allow(100.0)
    assert b.success_rate() == 0.0


def test_opens_once_min_calls_reached_with_enough_failures():
    b = CircuitBreaker("x", POLICY)
    for i in range(POLICY.min_calls):
        b.record(False, 0.01, 1.0)
    assert b.state(1.0) == "open"
    assert not b.allow(1.0)
    assert not b.allow(5.0)
    assert b.snapshot(1.0)["state"] == "open"


def test_threshold_is_inclusive():
    b = CircuitBreaker("x", POLICY)
    for i in range(5):
        b.record(True, 0.01, 0.0)
    for i in range(4):
        b.record(False, 0.01, 0.0)
    b.record(True, 0.01, 0.0)  # 10 calls, 40% failures
    assert b.state(0.0) == "closed"
    b2 = CircuitBreaker("y", POLICY)
    for ok in [True] * 5 + [False] * 5:  # 10 calls, 50% failures
        b2.record(ok, 0.01, 0.0)
    assert b2.state(0.0) == "open"


def test_mostly_successful_traffic_never_opens():
    b = CircuitBreaker("x", POLICY)
    for i in range(200):
        b.record(i % 3 != 0, 0.01, float(i))  # one failure in three
        assert b.state(float(i)) == "closed"


def _opened_at(t: float) -> CircuitBreaker:
    b = CircuitBreaker("x", POLICY)
    for _ in range(POLICY.min_calls):
        b.record(False, 0.01, t)
    assert b.state(t) == "open"
    return b


def test_open_refuses_until_open_seconds_then_half_open():
    b = _opened_at(100.0)
    assert b.state(109.999) == "open"
    assert not b.allow(109.999)
    assert b.state(110.0) == "half_open"


def test_half_open_allows_exactly_one_probe():
    b = _opened_at(100.0)
    assert b.allow(110.0) is True
    assert b.allow(110.0) is False
    assert b.allow(115.0) is False
    assert b.state(115.0) == "half_open"


def test_probe_success_closes_and_resets_the_window():
    b = _opened_at(100.0)
    assert b.allow(110.0)
    b.record(True, 0.02, 110.5)
    assert b.state(110.5) == "closed"
    assert b.allow(110.5)
    assert b.allow(110.5)
    assert b.success_rate() == 1.0
    # The old failures are forgotten: a single new failure does not reopen it.
    b.record(False, 0.02, 111.0)
    assert b.state(111.0) == "closed"
    assert b.success_rate() == 0.5


def test_probe_failure_reopens_for_another_period():
    b = _opened_at(100.0)
    assert b.allow(110.0)
    b.record(False, 0.02, 112.0)
    assert b.state(112.0) == "open"
    assert not b.allow(121.0)
    assert b.state(121.999) == "open"
    assert b.state(122.0) == "half_open"
    assert b.allow(122.0)
    assert not b.allow(122.0)


def test_late_success_while_open_does_not_close():
    b = _opened_at(100.0)
    b.record(True, 0.02, 105.0)
    assert b.state(105.0) == "open"
    assert not b.allow(105.0)


def test_window_slides():
    b = CircuitBreaker("x", BreakerPolicy(window=10, min_calls=10, failure_threshold=0.5, open_seconds=1.0))
    for _ in range(4):
        b.record(False, 0.01, 0.0)
    for _ in range(10):
        b.record(True, 0.01, 0.0)
    # The four failures have slid out of a 10-call window.
    assert b.success_rate() == 1.0
    assert b.attempts == 14


def test_snapshot_fields():
    b = CircuitBreaker("mockrazorpay", POLICY)
    b.record(True, 0.100, 1.0)
    b.record(False, 0.300, 2.0)
    b.record(True, 0.200, 3.0)
    snap = b.snapshot(3.0)
    assert snap == {"object": "connector", "name": "mockrazorpay", "state": "closed",
                    "success_rate": 0.6667, "latency_ms_p50": 200.0, "attempts": 3}
    assert b.latency_ms_p50() == 200.0


def test_snapshot_rounding_and_even_median():
    b = CircuitBreaker("x", POLICY)
    b.record(True, 0.0011111, 0.0)
    b.record(True, 0.0022222, 0.0)
    assert b.latency_ms_p50() == pytest.approx(1.667, abs=1e-3)
    assert b.latency_ms_p50() == round(b.latency_ms_p50(), 3)


def test_snapshot_while_open_and_half_open_counts_every_attempt():
    b = _opened_at(0.0)
    assert b.snapshot(5.0)["state"] == "open"
    assert b.snapshot(10.0)["state"] == "half_open"
    assert b.snapshot(10.0)["attempts"] == POLICY.min_calls
    assert b.snapshot(10.0)["success_rate"] == 0.0
    b.allow(10.0)
    b.record(True, 0.05, 10.0)
    snap = b.snapshot(10.0)
    assert snap["state"] == "closed"
    assert snap["attempts"] == POLICY.min_calls + 1
    assert snap["success_rate"] == 1.0
    assert snap["latency_ms_p50"] == 50.0


events = st.lists(
    st.tuples(st.sampled_from(["allow", "ok", "fail"]), st.floats(min_value=0, max_value=4)), max_size=80
)


@settings(max_examples=150, deadline=None)
@given(events)
def test_breaker_invariants_under_random_traffic(steps):
    b = CircuitBreaker("x", BreakerPolicy(window=10, min_calls=4, failure_threshold=0.5, open_seconds=3.0))
    now = 0.0
    probes_in_flight = 0
    for action, dt in steps:
        now += dt
        state = b.state(now)
        assert state in {"closed", "open", "half_open"}
        if action == "allow":
            allowed = b.allow(now)
            if state == "closed":
                assert allowed
            elif state == "open":
                assert not allowed
            else:
                probes_in_flight += allowed
                assert probes_in_flight <= 1
        else:
            b.record(action == "ok", 0.01, now)
            probes_in_flight = 0
            if action == "fail" and state != "closed":
                assert b.state(now) == "open"
        assert 0.0 <= b.success_rate() <= 1.0
    snap = b.snapshot(now)
    assert set(snap) == {"object", "name", "state", "success_rate", "latency_ms_p50", "attempts"}
    assert snap["attempts"] == sum(1 for a, _ in steps if a != "allow")


def test_admit_names_the_single_probe_and_ordinary_late_results_do_not_free_it():
    b = _opened_at(100.0)
    assert b.admit(105.0) is None
    assert b.admit(110.0) == "probe"
    # Many concurrent callers while the probe is out: all refused.
    assert [b.admit(110.0 + i / 10) for i in range(20)] == [None] * 20
    # A late result of a call admitted before the circuit opened neither frees
    # the probe slot nor closes the circuit.
    b.record(True, 0.01, 111.0, probe=False)
    assert b.state(111.0) == "half_open"
    assert b.admit(111.0) is None
    b.record(False, 0.01, 112.0, probe=True)  # the probe failed: open again
    assert b.state(112.0) == "open"
    assert b.admit(112.0) is None
    assert b.admit(122.0) == "probe"
    b.record(True, 0.01, 122.5, probe=True)
    assert b.state(122.5) == "closed"
    assert b.admit(122.5) == "call"
