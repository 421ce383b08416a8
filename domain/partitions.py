"""Time partitions of the bounded tables: periods, names, and what to create or drop.

Sans-IO: :func:`plan` decides from the partitions that exist, the clock and
the retention; :mod:`storage.partitions` carries it out. Times are UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re


class Period(enum.StrEnum):
    DAY = "day"
    WEEK = "week"      # starting on Monday
    MONTH = "month"


def floor(t: dt.datetime, period: Period) -> dt.datetime:
    """The start of the period holding ``t`` (midnight UTC)."""
    t = t.astimezone(dt.timezone.utc)
    day = dt.datetime(t.year, t.month, t.day, tzinfo=dt.timezone.utc)
    if period is Period.DAY:
        return day
    if period is Period.WEEK:
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1)


def step(start: dt.datetime, period: Period, n: int = 1) -> dt.datetime:
    """The start of the ``n``-th period after the one starting at ``start``."""
    if period is Period.DAY:
        return start + dt.timedelta(days=n)
    if period is Period.WEEK:
        return start + dt.timedelta(weeks=n)
    months = start.year * 12 + start.month - 1 + n
    return start.replace(year=months // 12, month=months % 12 + 1, day=1)


def name(table: str, start: dt.datetime) -> str:
    """``events_p20261201``: the partition of ``table`` starting at ``start``."""
    return f"{table}_p{start:%Y%m%d}"


_NAME = re.compile(r"_p(\d{8})$")


def start_of(table: str, relname: str) -> dt.datetime | None:
    """The start encoded in a partition's name, or None if it is not one of ours."""
    if not relname.startswith(table + "_p"):
        return None
    match = _NAME.search(relname)
    if match is None or len(relname) != len(table) + 10:
        return None
    return dt.datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Partition starts to create (oldest first) and to drop, and the retention cutoff."""

    create: list[dt.datetime]
    drop: list[dt.datetime]
    cutoff: dt.datetime | None


def plan(existing: set[dt.datetime], period: Period, now: dt.datetime, *, ahead: int,
         retention: dt.timedelta | None, unplaced: set[dt.datetime] = frozenset()) -> Plan:
    """What to do for one table.

    Args:
      existing: starts of the partitions that exist.
      period: the table's partition period.
      now: the clock.
      ahead: periods to have ready after the current one.
      retention: how long rows are kept (None: for ever).
      unplaced: starts of the periods of rows still in the default partition
        (each gets its partition too, unless it is past the retention).

    Returns:
      The plan: the current period's partition and ``ahead`` more, one for
      each period of unplaced rows to be kept; drop every partition that ends
      at or before ``now - retention`` (a partition is dropped whole, so rows
      live up to one period longer than the retention).
    """
    cutoff = now - retention if retention else None
    current = floor(now, period)
    wanted = {step(current, period, n) for n in range(ahead + 1)}
    wanted |= {s for s in unplaced if cutoff is None or step(s, period) > cutoff}
    create = sorted(wanted - existing)
    drop = sorted(s for s in existing if cutoff is not None and step(s, period) <= cutoff)
    return Plan(create, drop, cutoff)
