"""Prometheus gauges read at scrape time. One registry per app, so several apps (tests) never clash.

What is counted as it happens (transitions, connector calls, latencies) lives
in the process-wide :mod:`telemetry.metrics`; ``/metrics`` renders both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class UnitStats(Protocol):
    units: int
    round_trips: int
    max_round_trips: int


class Database(Protocol):
    """What the collector reads of :class:`storage.database.Database` (telemetry sits below storage)."""

    stats: Mapping[str, UnitStats]


class UnitsOfWork:
    """Exports the database's per-unit-of-work statistics (:attr:`storage.database.Database.stats`).

    A collector rather than counters updated per unit, so the database thread
    does nothing but add to plain integers.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self):
        trips = CounterMetricFamily("paycast_db_round_trips", "Database round trips by unit of work", labels=["unit"])
        units = CounterMetricFamily("paycast_db_units", "Units of work run, by name", labels=["unit"])
        most = GaugeMetricFamily("paycast_db_unit_round_trips_max", "Most round trips one unit of work took",
                                 labels=["unit"])
        for name, stats in sorted(dict(self._db.stats).items()):
            trips.add_metric([name], stats.round_trips)
            units.add_metric([name], stats.units)
            most.add_metric([name], stats.max_round_trips)
        yield from (trips, units, most)


class Metrics:
    def __init__(self, db: Database | None = None) -> None:
        # The request metrics' children of each (method, route, status): prometheus_client's
        # labels() takes a lock and builds its key on every call.
        self._request_children: dict[tuple[str, str, int], tuple] = {}
        self.registry = CollectorRegistry()
        if db is not None:
            self.registry.register(UnitsOfWork(db))
        self.requests = Counter("paycast_http_requests_total", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("paycast_http_request_seconds", "HTTP request latency by route",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.deadline_exceeded = Counter(
            "paycast_http_deadline_exceeded_total",
            "HTTP requests given up at PAYCAST_REQUEST_DEADLINE_S (app/deadline.py), by outcome: "
            "answered_503 (and closed) or closed (a response already begun)",
            ["method", "outcome"], registry=self.registry)
        self.payments = Gauge("paycast_payments", "Payments by status (all merchants)", ["status"],
                              registry=self.registry)
        self.actors = Gauge("paycast_actors_live", "Live actors by kind", ["kind"], registry=self.registry)
        self.actor_crashes = Gauge("paycast_actor_crashes", "Actor handler crashes since start", ["kind"],
                                   registry=self.registry)
        self.connector_state = Gauge("paycast_connector_circuit_open", "1 when the connector's circuit is open",
                                     ["connector", "state"], registry=self.registry)
        self.inbox_pending = Gauge("paycast_webhook_inbox_pending", "Stored gateway webhooks not yet applied",
                                   registry=self.registry)
        self.inbox_lag = Gauge("paycast_webhook_inbox_lag_seconds", "Age of the oldest unapplied gateway webhook",
                               registry=self.registry)
        self.inbox_dead = Gauge("paycast_webhook_inbox_dead", "Gateway webhooks whose retries are spent (dead letters)",
                                registry=self.registry)
        self.inbox_unmatched = Gauge("paycast_webhook_inbox_unmatched",
                                     "Gateway webhooks for a payment still unknown after the grace period",
                                     registry=self.registry)
        self.inbox_rows = Gauge("paycast_webhook_inbox_rows", "Stored gateway webhooks by outcome", ["status"],
                                registry=self.registry)
        self.reconcile_backlog = Gauge("paycast_reconciliation_backlog",
                                       "Payments processing past their deadline, awaiting a check",
                                       registry=self.registry)
        self.review_required = Gauge("paycast_payments_review_required", "Payments flagged for manual review",
                                     registry=self.registry)
        self.db_up = Gauge("paycast_database_up", "1 when the last database check succeeded",
                           registry=self.registry)
        self.role = Gauge("paycast_process_role", "1 for this process's role (config/roles.py)", ["role"],
                          registry=self.registry)
        self.wakeups = Gauge("paycast_wakeups", "Cross-process wake-ups (NOTIFY) sent and received since start",
                             ["direction"], registry=self.registry)
        self.ws_connections = Gauge("paycast_realtime_connections", "Open realtime WebSocket connections",
                                    registry=self.registry)
        self.ws_slow_consumer_closes = Counter("paycast_realtime_slow_consumer_closes_total",
                                               "Realtime connections closed as slow consumers (1013)",
                                               registry=self.registry)
        self.ws_sockets = Gauge("paycast_realtime_sockets_opened",
                                "Realtime sockets opened since start, by write path (fallback: one ASGI send per frame)",
                                ["path"], registry=self.registry)
        self.deliveries = Gauge("paycast_webhook_deliveries", "Outgoing webhook deliveries by status", ["status"],
                                registry=self.registry)
        self.outbox_lag = Gauge("paycast_webhook_outbox_lag_seconds",
                                "How long the most overdue pending outgoing webhook has been due",
                                registry=self.registry)
        self.stuck_payments = Gauge("paycast_payments_stuck", "Payments processing for longer than 10 minutes",
                                    registry=self.registry)
        # How many slow-consumer closes the counter already holds (the hub counts; we add the difference).
        self.ws_slow_reported = 0

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one HTTP request and its latency, under its route's template (every edge calls this)."""
        children = self._request_children.get((method, route, status))
        if children is None:
            children = self._request_children[(method, route, status)] = (
                self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
        children[0].inc()
        children[1].observe(seconds)
