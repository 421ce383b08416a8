"""Partition periods and the maintenance plan (domain/partitions.py)."""

from __future__ import annotations

import datetime as dt

from domain.partitions import Period, floor, name, plan, start_of, step

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 29, 16, 30, tzinfo=UTC)  # a Sunday


def test_periods_start_at_utc_midnight_monday_and_the_first_of_the_month():
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    assert floor(dt.datetime(2026, 11, 30, 2, 0, tzinfo=ist), Period.DAY) == dt.datetime(2026, 11, 29, tzinfo=UTC)
    assert floor(NOW, Period.WEEK) == dt.datetime(2026, 11, 23, tzinfo=UTC)
    assert floor(NOW, Period.MONTH) == dt.datetime(2026, 11, 1, tzinfo=UTC)
    assert step(dt.datetime(2026, 12, 1, tzinfo=UTC), Period.MONTH, 2) == dt.datetime(2027, 2, 1, tzinfo=UTC)
    assert step(dt.datetime(2026, 1, 1, tzinfo=UTC), Period.MONTH, -1) == dt.datetime(2025, 12, 1, tzinfo=UTC)


def test_names_round_trip_and_foreign_tables_are_not_ours():
    start = dt.datetime(2026, 11, 23, tzinfo=UTC)
    assert name("webhook_inbox", start) == "webhook_inbox_p20261123"
    assert start_of("webhook_inbox", "webhook_inbox_p20261123") == start
    assert start_of("webhook_inbox", "webhook_inbox_default") is None
    assert start_of("events", "events_p2026112") is None


def test_plan_makes_the_current_and_ahead_periods_and_places_old_rows():
    old = dt.datetime(2026, 9, 1, tzinfo=UTC)
    p = plan({dt.datetime(2026, 11, 1, tzinfo=UTC)}, Period.MONTH, NOW, ahead=2, retention=None, unplaced={old})
    assert p.create == [old, dt.datetime(2026, 12, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC)]
    assert p.drop == []
    assert p.cutoff is None


def test_retention_drops_only_partitions_that_end_before_the_cutoff_and_never_remakes_them():
    existing = {dt.datetime(2026, 11, d, tzinfo=UTC) for d in (20, 21, 22, 29)}
    p = plan(existing, Period.DAY, NOW, ahead=1, retention=dt.timedelta(days=7),
             unplaced={dt.datetime(2026, 11, 1, tzinfo=UTC), dt.datetime(2026, 11, 22, tzinfo=UTC)})
    # cutoff 2026-11-22 16:30: the 20th and 21st end before it; the 22nd still holds kept rows.
    assert p.drop == [dt.datetime(2026, 11, 20, tzinfo=UTC), dt.datetime(2026, 11, 21, tzinfo=UTC)]
    assert p.create == [dt.datetime(2026, 11, 30, tzinfo=UTC)]
