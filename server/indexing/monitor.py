"""Consumption-threshold rules, as a small pure core: an hour whose consumption passes the
meter's limit, and an abrupt jump in power. No I/O: the indexer feeds it each recorded
reading with the hourly totals it just updated, stores what it returns (once per meter, kind
and hour or reading) and delivers the notifications.

The jump rule compares the mean power of the latest readings with the median of the meter's
recent ones: a jump is power above ``jump_factor`` times that median and at least
``jump_min_w`` above it (so a house idling at 150 W does not alarm at 500 W). Power is taken
over at least ``min_span`` seconds (the latest interval, with those before it when it is
shorter), because a register counts whole watt-hours: one more Wh in a 3-second interval
would read as 1.2 kW. It fires when a jump begins, not again while power stays high.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from common.messages import ConsumptionAlert
from server.indexing.history import HOUR, interval_power_w, trailing_median

__all__ = ["Rules", "Trend", "Candidate", "evaluate"]


@dataclass(frozen=True)
class Rules:
    """The thresholds' parameters (settings ``JUMP_FACTOR``, ``JUMP_MIN_W``)."""

    jump_factor: float = 3.0
    jump_min_w: int = 1_000
    #: How many recent powers the median is taken over, and how many it needs first.
    window: int = 12
    min_samples: int = 4
    #: Seconds of readings a power is measured over, at least.
    min_span: int = 60


@dataclass
class Trend:
    """What the jump rule remembers of one meter: recent powers (as many as ``Rules.window``), the
    latest intervals they are measured over, and whether it is in a jump."""

    powers: deque[int] = field(default_factory=lambda: deque(maxlen=12))
    intervals: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=64))
    jumping: bool = False

    def power(self, seconds: int, energy_wh: int, min_span: int) -> int:
        """Add an interval; the mean power over it and as many before it as make ``min_span`` seconds."""
        self.intervals.append((seconds, energy_wh))
        span = wh = 0
        for s, e in reversed(self.intervals):
            span, wh = span + s, wh + e
            if span >= min_span:
                break
        return interval_power_w(wh, span)

    def observe(self, power: int, rules: Rules) -> tuple[bool, float]:
        """Take the next interval's power: (whether a jump begins with it, the usual power it was compared with)."""
        usual = trailing_median(list(self.powers))
        jump = (
            len(self.powers) >= rules.min_samples
            and power > rules.jump_factor * usual
            and power - usual >= rules.jump_min_w
        )
        begins = jump and not self.jumping
        self.jumping = jump
        self.powers.append(power)
        return begins, usual


@dataclass(frozen=True)
class Candidate:
    """An alert the rules raise; ``key`` makes it unique per meter and kind (an hour, or a reading time)."""

    key: int
    alert: ConsumptionAlert


def _kwh(wh: int) -> str:
    return f"{wh / 1000:.2f} kWh"


def _kw(w: float) -> str:
    return f"{w / 1000:.1f} kW"


def evaluate(
    trend: Trend,
    meter: str,
    start: int,
    end: int,
    energy_wh: int,
    hour_totals: list[tuple[int, int]],
    limit_wh: int,
    rules: Rules,
    tz: ZoneInfo,
) -> list[Candidate]:
    """Apply both rules to one recorded interval; updates ``trend`` and returns the alerts raised.

    ``hour_totals`` are the (hour start, total Wh so far) of the hours the interval touched;
    ``limit_wh`` of 0 means the meter has no hourly limit.
    """
    out: list[Candidate] = []
    if limit_wh > 0:
        for hour, total in hour_totals:
            if total > limit_wh:
                local = dt.datetime.fromtimestamp(hour, tz)
                span = f"{local:%H:%M}-{dt.datetime.fromtimestamp(hour + HOUR, tz):%H:%M} on {local:%d %b}"
                out.append(Candidate(hour, ConsumptionAlert(
                    meter=meter, kind="hourly_limit", at=end, energy_wh=total, limit_wh=limit_wh,
                    message=f"consumption {span} reached {_kwh(total)}, above the limit of {_kwh(limit_wh)}",
                )))
    power = trend.power(end - start, energy_wh, rules.min_span)
    begins, usual = trend.observe(power, rules)
    if begins:
        out.append(Candidate(end, ConsumptionAlert(
            meter=meter, kind="sudden_jump", at=end, energy_wh=energy_wh, power_w=power,
            message=f"power jumped to {_kw(power)}, over {rules.jump_factor:g} times the usual {_kw(usual)}; "
                    "check for an appliance left on",
        )))
    return out
