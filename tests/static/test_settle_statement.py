"""The settle statement, read whole.

A gateway webhook's settle is one statement composed of five parts: the
payment and its attempt (storage/payments.py ``settle_head``), the inbox row
it marks processed (storage/inbox.py ``_mark_with``), the event log
(storage/events.py ``Append``), the outgoing webhook deliveries
(storage/webhook_deliveries.py) and the customer's realtime log
(storage/realtime.py). Each part names its parameters; ``storage.sql.q``
numbers them once. ``pytest -s`` prints the statement as PostgreSQL gets it.
"""

from __future__ import annotations

import datetime as dt
import re

from components import COMMITS
from domain.events import NewEvent
from storage import events, inbox, payments
from storage.sql import Q, q

NOW = dt.datetime(2026, 12, 6, tzinfo=dt.timezone.utc)


def _settle_with_inbox_mark() -> tuple[Q, dict]:
    snapshot = {"id": "pay_1", "object": "payment", "status": "succeeded", "customer_id": "cus_1"}
    append = events.Append("mer_1", [NewEvent("payment.succeeded", "pay_1", snapshot, "cus_1")], NOW,
                           projections=COMMITS.projections, guard="upd")
    also = inbox._mark_with("whi_1", "applied", "mer_1", 1)
    values = {"payment_id": "pay_1", "attempt_id": "att_1", "attempt_status": "succeeded",
              "connector_txn_id": "txn_1", "error_code": None, "now": NOW, "status": "succeeded",
              "amount_received": 1000, "amount_capturable": 0, "last_error": None, "seen_updated_at": NOW,
              "latency_ms": None, "next_action": None, "cancellation_reason": None, "method_update": {},
              "seen_status": "processing", **also.args, **append.args}
    return q(payments.statement(payments.settle_head(also), append)), values


def test_the_settle_statement_is_one_statement_with_every_part_in_lock_order():
    query, values = _settle_with_inbox_mark()
    print(query.sql)
    ctes = re.findall(r"^(\w+) AS \(", query.sql, flags=re.MULTILINE)
    assert ctes == ["upd", "att", "also", "bump", "ev", "deliveries", "rt_clients", "rt_messages"], query.sql
    assert query.sql.startswith("WITH\n") and "\nSELECT (SELECT count(*) FROM upd) AS changed" in query.sql


def test_its_parameters_are_numbered_once_from_their_names():
    query, values = _settle_with_inbox_mark()
    numbers = sorted({int(n) for n in re.findall(r"\$(\d+)", query.sql)})
    assert numbers == list(range(1, len(query.names) + 1)), (numbers, query.names)
    assert "$" not in re.sub(r"\$\d+", "", query.sql), "every named parameter was converted"
    assert set(query.names) == set(values), set(query.names) ^ set(values)
    args = query.args(values)
    assert args[query.names.index("payment_id")] == "pay_1"
    assert args[query.names.index("also_inbox_id")] == "whi_1"
    assert args[query.names.index("ev_merchant")] == "mer_1"


def test_a_name_used_twice_is_one_parameter():
    query = Q("SELECT $a::int + $b::int + $a::int")
    assert query.sql == "SELECT $1::int + $2::int + $1::int"
    assert query.args({"b": 2, "a": 1}) == [1, 2]
