"""Consumption over time, as pure functions: spreading a reading's energy over clock hours,
grouping hours into days, weeks and months in local time, and the query window helpers the
API uses. No I/O: the index stores what these compute.

A reading is a cumulative register, so the energy of one interval (between two readings) is
known but not when within it it was used. It is spread over the clock hours the interval
covers in proportion to the time spent in each, in whole watt-hours that always add up to
the interval's energy exactly (largest remainder), so hourly totals sum to the register.

A window of time counts consumption by the same rule: it holds the clock hours that begin
inside it, and a reading counts with its share in those hours (``window_hours``,
``energy_in_hours``). So a window's readings and its hourly totals always add up to the same Wh.
"""

from __future__ import annotations

import datetime as dt
import enum
from statistics import median
from zoneinfo import ZoneInfo

from common.tariff import (
    ACTUAL_MAX_INTERVAL,
    PERIOD_SECONDS,
    SettlementPeriod,
    is_actual,
    settlement_periods,
)

__all__ = [
    "HOUR",
    "PERIOD",
    "ACTUAL_MAX_INTERVAL",
    "SettlementPeriod",
    "settlement_periods",
    "is_actual",
    "GroupBy",
    "spread_over_hours",
    "window_hours",
    "energy_in_hours",
    "bucket_start",
    "bucket_end",
    "group_hours",
    "interval_power_w",
    "trailing_median",
]

HOUR = 3_600
PERIOD = PERIOD_SECONDS


class GroupBy(str, enum.Enum):
    """How consumption is totalled, as UK suppliers' consumption APIs offer it (``halfhour``: the
    settlement periods of each local day, 48, or 46 and 50 on the clock-change days)."""

    HALFHOUR = "halfhour"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def spread_over_hours(start: int, end: int, energy_wh: int) -> list[tuple[int, int]]:
    """Split ``energy_wh`` used between unix times ``start`` and ``end`` over clock hours.

    Returns (hour start, Wh) pairs in time order whose Wh add up to ``energy_wh`` exactly.
    """
    if end <= start:
        return [(end - end % HOUR, energy_wh)]
    hours: list[tuple[int, int]] = []
    t = start
    while t < end:
        hour = t - t % HOUR
        nxt = min(hour + HOUR, end)
        hours.append((hour, nxt - t))
        t = nxt
    total = end - start
    shares = [(hour, energy_wh * seconds // total, energy_wh * seconds % total) for hour, seconds in hours]
    left = energy_wh - sum(wh for _, wh, _ in shares)
    # Largest remainders get the watt-hours that flooring left over.
    order = sorted(range(len(shares)), key=lambda i: (-shares[i][2], i))
    extra = set(order[:left])
    return [(hour, wh + (1 if i in extra else 0)) for i, (hour, wh, _) in enumerate(shares)]


def window_hours(start: int, end: int) -> tuple[int, int]:
    """The clock hours a window [start, end) counts, those beginning inside it, as [first, after)."""
    return -(-start // HOUR) * HOUR, -(-end // HOUR) * HOUR


def energy_in_hours(start: int, end: int, energy_wh: int, first: int, after: int) -> int:
    """The share of ``energy_wh`` (used from ``start`` to ``end``) that ``spread_over_hours`` puts in hours
    beginning in [first, after)."""
    return sum(wh for hour, wh in spread_over_hours(start, end, energy_wh) if first <= hour < after)


def bucket_start(ts: int, group_by: GroupBy, tz: ZoneInfo) -> int:
    """The unix time at which the local hour, day, ISO week (Monday) or month holding ``ts`` begins."""
    if group_by is GroupBy.HOUR:
        return ts - ts % HOUR
    local = dt.datetime.fromtimestamp(ts, tz)
    day = local.date()
    if group_by is GroupBy.WEEK:
        day = day - dt.timedelta(days=day.weekday())
    elif group_by is GroupBy.MONTH:
        day = day.replace(day=1)
    return int(dt.datetime.combine(day, dt.time(), tzinfo=tz).timestamp())


def bucket_end(start: int, group_by: GroupBy, tz: ZoneInfo) -> int:
    """The unix time at which the bucket beginning at ``start`` ends (local days may be 23 or 25 h)."""
    if group_by is GroupBy.HOUR:
        return start + HOUR
    day = dt.datetime.fromtimestamp(start, tz).date()
    if group_by is GroupBy.DAY:
        nxt = day + dt.timedelta(days=1)
    elif group_by is GroupBy.WEEK:
        nxt = day + dt.timedelta(days=7)
    else:
        nxt = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return int(dt.datetime.combine(nxt, dt.time(), tzinfo=tz).timestamp())


def group_hours(hours: list[tuple[int, int]], group_by: GroupBy, tz: ZoneInfo) -> list[tuple[int, int, int]]:
    """Total (hour start, Wh) pairs into (bucket start, bucket end, Wh), in time order."""
    totals: dict[int, int] = {}
    for hour, wh in hours:
        key = bucket_start(hour, group_by, tz)
        totals[key] = totals.get(key, 0) + wh
    return [(start, bucket_end(start, group_by, tz), wh) for start, wh in sorted(totals.items())]


def interval_power_w(energy_wh: int, seconds: int) -> int:
    """The mean power over an interval, in watts."""
    return energy_wh * HOUR // seconds if seconds > 0 else 0


def trailing_median(values: list[int]) -> float:
    """The median of recent interval powers (0 when there are none)."""
    return float(median(values)) if values else 0.0
