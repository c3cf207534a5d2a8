"""The demand-response baseline: what a meter would have used in an event's window had there been no event.

Pure arithmetic on a meter's recorded readings (``ReadingRecorded`` events and its opening), so the
settlement and the recomputation from the chain alone give the same figures to the Wh. The method,
after National Grid ESO's Demand Flexibility Service (a mean of the same window on recent days plus an
in-day adjustment):

1. The energy of each UTC half hour is the contract's own split of each reading's delta (``split``).
2. Baseline days: the up to ``BASELINE_DAYS`` (10) most recent days, looking back at most
   ``LOOKBACK_DAYS`` (28), whose same window the readings cover and in which no demand-response event
   was active; fewer than ``MIN_BASELINE_DAYS`` (3) and the meter has no baseline (no credit).
3. Unadjusted baseline: the mean over those days of the window's energy.
4. In-day adjustment: the event day's energy in the 3 hours ending 1 hour before the start, minus the
   same days' mean over those hours, scaled to the window's length (none when the readings do not cover
   those hours). It corrects for a day colder or emptier than usual; the hour before the start is left
   out because households prepare for an event then (pre-heating, charging early).
5. Baseline Wh: the adjusted mean rounded down, never below 0 and never above what the supply can deliver
   over the window (``credit_bound_wh``: the billing contract's ``maxPowerW`` for the window's length, rounded
   down; the DemandResponse contract refuses a larger baseline); the reduction is baseline minus actual,
   none when actual is higher.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from common.tariff import PERIOD_SECONDS, split

__all__ = [
    "BASELINE_DAYS",
    "LOOKBACK_DAYS",
    "MIN_BASELINE_DAYS",
    "ADJUSTMENT_SECONDS",
    "ADJUSTMENT_GAP_SECONDS",
    "Measurement",
    "half_hourly",
    "measure",
    "baseline",
    "half_hour_baseline",
    "credit_bound_wh",
]

BASELINE_DAYS = 10
LOOKBACK_DAYS = 28
MIN_BASELINE_DAYS = 3
ADJUSTMENT_SECONDS = 3 * 3600
ADJUSTMENT_GAP_SECONDS = 3600
DAY = 86_400


@dataclass(frozen=True)
class Measurement:
    """A meter's response to one event: baseline and actual Wh over the window, and the days used."""

    baseline_wh: int | None
    actual_wh: int
    days: tuple[int, ...]

    @property
    def reduction_wh(self) -> int:
        """Baseline minus actual, none when actual is higher or there is no baseline."""
        return max(0, self.baseline_wh - self.actual_wh) if self.baseline_wh is not None else 0


@dataclass(frozen=True)
class _Usage:
    """Half-hourly import energy and the span of time the readings cover."""

    by_period: dict[int, int]
    first: int
    last: int

    def energy(self, start: int, end: int) -> int | None:
        """Wh imported in [start, end) (period boundaries), or None when the readings do not cover it."""
        if start < self.first or end > self.last:
            return None
        return sum(self.by_period.get(p, 0) for p in range(start // PERIOD_SECONDS, end // PERIOD_SECONDS))


def credit_bound_wh(max_power_w: int, start: int, end: int) -> int:
    """The most energy (Wh) the supply can deliver in [start, end) at ``max_power_w``: the bound on a baseline."""
    return max_power_w * (end - start) // 3600


def half_hourly(opening: tuple[int, int], readings: Iterable[tuple[int, int]]) -> _Usage:
    """Import Wh per UTC half hour from the opening (time, register) and readings (time, register) in order."""
    by_period: dict[int, int] = {}
    t, register = opening
    for at, value in readings:
        for p, wh in split(t, at, value - register):
            by_period[p] = by_period.get(p, 0) + wh
        t, register = at, value
    return _Usage(by_period, opening[0], t)


def _overlaps(start: int, end: int, busy: Sequence[tuple[int, int]]) -> bool:
    return any(s < end and start < e for s, e in busy)


def measure(usage: _Usage, start: int, end: int, event_windows: Sequence[tuple[int, int]],
            cap_wh: int | None = None) -> Measurement:
    """Baseline and actual Wh of the window [start, end) by the method above.

    Args:
        usage: the meter's half-hourly energy (``half_hourly``).
        start, end: the event's active period, on half-hour boundaries.
        event_windows: the active periods of every demand-response event not cancelled (days in
            which one was active are not baseline days).
        cap_wh: the most a baseline may be (``credit_bound_wh``); None: no bound.

    Raises:
        ValueError: the readings do not cover the event's window (it cannot be measured yet).
    """
    actual = usage.energy(start, end)
    if actual is None:
        raise ValueError(f"the readings do not cover the window {start}-{end} yet")
    baseline_wh, days = baseline(usage, start, end, event_windows, cap_wh)
    return Measurement(baseline_wh, actual, days)


def baseline(usage: _Usage, start: int, end: int, event_windows: Sequence[tuple[int, int]],
             cap_wh: int | None = None) -> tuple[int | None, tuple[int, ...]]:
    """The baseline Wh of the window [start, end) (None with too few days) and the days it used (steps 2-5).

    Needs no reading in the window itself, so it gives an active event's baseline too.
    """
    adj_start, adj_end = start - ADJUSTMENT_GAP_SECONDS - ADJUSTMENT_SECONDS, start - ADJUSTMENT_GAP_SECONDS
    days: list[int] = []
    window_total = adj_total = 0
    adjustable = usage.energy(adj_start, adj_end) is not None
    for k in range(1, LOOKBACK_DAYS + 1):
        if len(days) == BASELINE_DAYS:
            break
        shift = k * DAY
        window = usage.energy(start - shift, end - shift)
        if window is None or _overlaps(start - shift, end - shift, event_windows):
            continue
        before = usage.energy(adj_start - shift, adj_end - shift)
        days.append(start - shift)
        window_total += window
        if before is None:
            adjustable = False
        else:
            adj_total += before
    if len(days) < MIN_BASELINE_DAYS:
        return None, tuple(days)
    mean = Fraction(window_total, len(days))
    if adjustable:
        event_day = usage.energy(adj_start, adj_end)
        assert event_day is not None
        mean += (event_day - Fraction(adj_total, len(days))) * Fraction(end - start, ADJUSTMENT_SECONDS)
    wh = max(0, int(mean // 1))
    return (wh if cap_wh is None else min(wh, cap_wh)), tuple(days)


def half_hour_baseline(usage: _Usage, start: int, days: Sequence[int], total_wh: int, periods: int) -> list[int]:
    """A baseline of ``total_wh`` over ``periods`` half hours from ``start``, split as the baseline days used them.

    Each half hour takes its mean over the days (``days``: each day's window start) plus an even share of
    what the total adds to those means (the in-day adjustment and rounding), never below 0; the whole
    Wh are then handed out by largest remainder so the half hours add up to ``total_wh`` exactly (evenly
    when there are no days or nothing to weigh by).
    """
    weights: list[Fraction] = []
    for i in range(periods):
        means = [usage.energy(d + i * PERIOD_SECONDS, d + (i + 1) * PERIOD_SECONDS) or 0 for d in days]
        weights.append(Fraction(sum(means), len(means)) if means else Fraction(0))
    extra = Fraction(total_wh - sum(weights), periods) if periods else Fraction(0)
    weights = [max(Fraction(0), w + extra) for w in weights]
    weight = sum(weights, Fraction(0))
    if weight == 0:
        weights, weight = [Fraction(1)] * periods, Fraction(periods)
    shares = [w * total_wh / weight for w in weights]
    out = [int(s // 1) for s in shares]
    order = sorted(range(periods), key=lambda i: shares[i] - out[i], reverse=True)
    for i in order[:total_wh - sum(out)]:
        out[i] += 1
    return out
