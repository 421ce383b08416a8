"""deploy/: the Prometheus alert rules parse and, like the Grafana dashboard, use
only metric families (and label names) that a real server's ``/metrics`` exposes."""

from __future__ import annotations

import json
import pathlib
import re

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import payment_body

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"
# Series Prometheus itself makes for every scrape target.
SYNTHETIC = {"up"}
_NAME = re.compile(r"\b(paycast_[a-z0-9_]+|up)\b")
_SELECTOR = re.compile(r"\b(paycast_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def _exposed(server, client) -> tuple[set[str], dict[str, set[str]]]:
    """Every series name ``/metrics`` can produce, and the label names seen per series name."""
    client.post("/v1/payments", json=payment_body(confirm=True))  # so labelled families have samples
    text = client.get("/metrics").text
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_count", "_sum", "_created"],
                    "summary": ["_count", "_sum", "_created"]}.get(family.type, [])
        names.add(family.name)
        names.update(family.name + s for s in suffixes)
        for sample in family.samples:
            names.add(sample.name)
            labels.setdefault(sample.name, set()).update(sample.labels)
    return names, labels


def _check_expr(expr: str, names: set[str], labels: dict[str, set[str]]) -> list[str]:
    problems = []
    if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
        problems.append(f"unbalanced brackets: {expr}")
    used = set(_NAME.findall(expr))
    if not used:
        problems.append(f"uses no metric: {expr}")
    problems += [f"{name} is not exposed by /metrics" for name in used - SYNTHETIC - names]
    for name, matchers in _SELECTOR.findall(expr):
        known = labels.get(name)
        if known is None:
            continue  # no sample yet to learn its labels from; the name itself is checked above
        for label in _MATCHER.findall(matchers):
            if label not in known and not (name.endswith("_bucket") and label == "le"):
                problems.append(f"{name} has no label {label!r} (has {sorted(known)})")
    return problems


def test_alert_rules_parse_and_use_exposed_metrics(server, client):
    names, labels = _exposed(server, client)
    rules = yaml.safe_load((DEPLOY / "prometheus" / "paycast-alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in alerts} >= {"PaycastStuckPayments", "PaycastInboxDeadLetters", "PaycastOutboxLag",
                                           "PaycastConnectorBreakerOpen", "PaycastDatabaseUnavailable"}
    problems = []
    for rule in alerts:
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        problems += [f"{rule['alert']}: {p}" for p in _check_expr(rule["expr"], names, labels)]
    assert not problems, "\n".join(problems)


def test_dashboard_uses_exposed_metrics(server, client):
    names, labels = _exposed(server, client)
    dashboard = json.loads((DEPLOY / "grafana" / "paycast-dashboard.json").read_text())
    targets = [t for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(targets) >= 20
    problems = []
    for target in targets:
        problems += _check_expr(target["expr"], names, labels)
    assert not problems, "\n".join(problems)
    # Every family an on-call engineer needs has a panel.
    shown = {n for t in targets for n in _NAME.findall(t["expr"])}
    for family in ("paycast_transitions_total", "paycast_connector_calls_total", "paycast_webhook_inbox_rows",
                   "paycast_webhook_outbox_lag_seconds", "paycast_db_unit_seconds_bucket",
                   "paycast_actor_mailbox_high_water", "paycast_realtime_messages_sent_total"):
        assert family in shown, family
