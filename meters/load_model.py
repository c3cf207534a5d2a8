"""Simulated UK household electricity demand, deterministic for a seed, and the register it drives.

A ``LoadModel`` gives the power drawn by one household at any unix time; a ``Register`` turns
that power into the whole-Wh cumulative register a smart meter reports; ``history`` builds the
half-hourly readings a new meter is provisioned with.

The model, per UTC day, is the sum of:

* a baseload (fridge-freezer, router, standby) that never switches off;
* a smooth demand curve by local time of day (night trough, morning peak, main evening peak),
  with a different weekday and weekend curve, a seasonal factor (highest in mid-January,
  lowest in mid-July), a random level for the day and per-minute noise;
* appliance events drawn at random for the day: kettle boils, an evening oven, washing-machine
  heating bursts, and (optionally) overnight electric-vehicle charging.

Power is constant within each minute of unix time, so energy is integrated exactly minute by
minute and ``energy_wh(t0, t1) + energy_wh(t1, t2) == energy_wh(t0, t2)`` up to float rounding.
Everything random for a day comes from generators seeded by ``(seed, day number)``, so any
interval can be evaluated on its own and gives the same answer whatever was asked before.
"""

from __future__ import annotations

import enum
import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from common.tariff import Wh

__all__ = [
    "Archetype",
    "ArchetypeProfile",
    "ARCHETYPES",
    "EnergyModel",
    "LoadModel",
    "Register",
    "history",
    "uk_utc_offset_minutes",
    "MAX_POWER_W",
    "EV_ANNUAL_KWH",
    "EV_CHARGER_W",
]

SECONDS_PER_MINUTE = 60
MINUTES_PER_HOUR = 60
HOURS_PER_DAY = 24
MINUTES_PER_DAY = MINUTES_PER_HOUR * HOURS_PER_DAY
SECONDS_PER_HOUR = SECONDS_PER_MINUTE * MINUTES_PER_HOUR
SECONDS_PER_DAY = SECONDS_PER_MINUTE * MINUTES_PER_DAY
DAYS_PER_YEAR = 365.25
WH_PER_KWH = 1_000
BST_OFFSET_MINUTES = 60
_EPOCH = date(1970, 1, 1)
_DAY_CACHE_SIZE = 8

#: Highest mean power the model or a register ever reports. The billing contract rejects a
#: reading whose average power since the last one exceeds ``max_power_w`` (24 kW, about a 100 A
#: single-phase supply); 1 kW of headroom keeps whole-Wh rounding from ever crossing it.
MAX_POWER_W = 23_000.0

# Appliances. Durations are inclusive (low, high) ranges in whole minutes; start windows are
# (earliest, latest) minutes after local midnight.
#: A UK kettle draws 2.5-3 kW (a 13 A plug allows about 3.1 kW) and boils a litre in 2-4 minutes.
KETTLE_W = 3_000.0
KETTLE_MINUTES = (2, 4)
#: Kettle uses per day vary by up to this many either side of the archetype's mean.
KETTLE_USES_SPREAD = 1
#: Kettles are boiled in waking hours, from 06:00 to 23:00 local time (hours, end excluded).
KETTLE_HOURS_LOCAL = (6, 23)
#: An electric oven element, averaged over its thermostat cycling, draws about 2 kW.
OVEN_W = 2_000.0
OVEN_MINUTES = (30, 60)
OVEN_START_LOCAL = (17 * MINUTES_PER_HOUR, 19 * MINUTES_PER_HOUR + 30)
#: A washing machine's heater draws about 2 kW: one burst heats the wash, a shorter one the rinse.
WASH_W = 2_000.0
WASH_HEAT_MINUTES = (10, 20)
WASH_GAP_MINUTES = (30, 50)
WASH_RINSE_MINUTES = (5, 10)
WASH_START_LOCAL = (9 * MINUTES_PER_HOUR, 20 * MINUTES_PER_HOUR)
#: A 32 A single-phase home charge point delivers about 7 kW.
EV_CHARGER_W = 7_000.0
#: About 7,000 miles a year (the DfT average for a car in England) at 3.5 miles per kWh.
EV_ANNUAL_KWH = 2_000.0
#: Share of nights the car is plugged in; the session length is set so the year hits EV_ANNUAL_KWH.
EV_NIGHT_PROBABILITY = 0.4
#: Sessions start from 23:00 to 00:30 local time, when off-peak EV tariffs begin.
EV_START_LOCAL = (23 * MINUTES_PER_HOUR, 24 * MINUTES_PER_HOUR + 30)
#: Session lengths are drawn uniformly within this fraction either side of the mean length.
EV_DURATION_SPREAD = 0.5

# The smooth demand curve.
#: Relative demand by local hour, after the shape of Elexon's profile class 1 (domestic
#: unrestricted) curves: a trough at 02:00-05:00, a morning peak at 07:00-09:00 and the main
#: peak at 17:00-21:00. Normalised to a mean of 1 before use, so only the shape matters.
WEEKDAY_SHAPE: tuple[float, ...] = (
    0.55, 0.45, 0.40, 0.38, 0.38, 0.42, 0.65, 1.05, 1.10, 0.90, 0.80, 0.78,
    0.85, 0.82, 0.78, 0.82, 1.00, 1.45, 1.70, 1.65, 1.50, 1.30, 1.05, 0.75,
)  # fmt: skip
#: At weekends the morning peak comes later and demand stays higher through the day.
WEEKEND_SHAPE: tuple[float, ...] = (
    0.60, 0.50, 0.42, 0.40, 0.38, 0.38, 0.45, 0.65, 0.95, 1.15, 1.15, 1.10,
    1.15, 1.10, 1.00, 0.98, 1.10, 1.40, 1.60, 1.55, 1.45, 1.30, 1.10, 0.80,
)  # fmt: skip
#: Seasonal swing of the archetype's demand, ±20% about its annual mean, after the winter/summer
#: spread of the profile class 1 curves. The smooth curve (lighting, cooking, some heating)
#: carries all of it: the baseload and the appliance events do not vary with the season.
SEASONAL_AMPLITUDE = 0.20
#: Day of the year with the highest demand: mid-January, the coldest and darkest weeks.
SEASONAL_PEAK_DAY_OF_YEAR = 15
#: Log-normal spread of a whole day's level about the mean (some days are busier than others).
DAY_LEVEL_SIGMA = 0.10
#: Log-normal spread of each minute about the smooth curve.
MINUTE_NOISE_SIGMA = 0.25


class Archetype(enum.StrEnum):
    """Household consumption archetypes, named as in Ofgem's Typical Domestic Consumption Values."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True)
class ArchetypeProfile:
    """What sets an archetype apart: its annual consumption and how often its appliances run."""

    annual_kwh: float
    baseload_w: float
    kettle_uses_per_day: int
    oven_probability: float
    wash_probability: float


#: Annual figures are Ofgem's Typical Domestic Consumption Values for electricity (profile
#: class 1, from April 2023); baseloads span the 50-150 W typical of always-on appliances;
#: ``oven_probability`` and ``wash_probability`` are the chance of an oven meal or a wash on a day.
ARCHETYPES: dict[Archetype, ArchetypeProfile] = {
    Archetype.LOW: ArchetypeProfile(
        annual_kwh=1_800.0, baseload_w=60.0, kettle_uses_per_day=3, oven_probability=0.25, wash_probability=0.20
    ),
    Archetype.MEDIUM: ArchetypeProfile(
        annual_kwh=2_700.0, baseload_w=90.0, kettle_uses_per_day=4, oven_probability=0.40, wash_probability=0.35
    ),
    Archetype.HIGH: ArchetypeProfile(
        annual_kwh=4_100.0, baseload_w=130.0, kettle_uses_per_day=6, oven_probability=0.60, wash_probability=0.60
    ),
}


class EnergyModel(Protocol):
    """Anything that can say how much energy a household used between two unix times."""

    def energy_wh(self, t0: float, t1: float) -> float:
        """Energy in Wh used from ``t0`` to ``t1``."""
        ...


@dataclass(frozen=True)
class _Event:
    """One appliance run: minutes relative to the start of the UTC day it was drawn for."""

    start: int
    end: int
    power_w: float


@dataclass(frozen=True)
class _Day:
    """The raw per-minute power of one UTC day, before the multiplier and demand factor."""

    watts: tuple[float, ...]
    peak: float


def _last_sunday(year: int, month: int, last_day: int) -> date:
    end = date(year, month, last_day)
    return end - timedelta(days=(end.weekday() + 1) % 7)


def uk_utc_offset_minutes(day: date) -> int:
    """Minutes UK local time is ahead of UTC on ``day``: 60 in British Summer Time, else 0.

    BST runs from the last Sunday in March to the last Sunday in October. The model uses one
    offset for a whole UTC day, so the hour after each change (at 01:00 UTC) is an hour out.
    """
    if _last_sunday(day.year, 3, 31) <= day < _last_sunday(day.year, 10, 31):
        return BST_OFFSET_MINUTES
    return 0


def _minute_curve(hourly: tuple[float, ...]) -> tuple[float, ...]:
    """Interpolate hourly values (at each hour's midpoint) to minutes, normalised to mean 1."""
    values = []
    for minute in range(MINUTES_PER_DAY):
        position = (minute + 0.5) / MINUTES_PER_HOUR - 0.5
        hour = math.floor(position)
        weight = position - hour
        values.append(hourly[hour % HOURS_PER_DAY] * (1 - weight) + hourly[(hour + 1) % HOURS_PER_DAY] * weight)
    mean = sum(values) / len(values)
    return tuple(v / mean for v in values)


def _utc_curves() -> dict[tuple[bool, int], tuple[float, ...]]:
    """The normalised curves indexed by UTC minute, keyed by (weekend, UTC offset in minutes)."""
    curves = {}
    for weekend, hourly in ((False, WEEKDAY_SHAPE), (True, WEEKEND_SHAPE)):
        local = _minute_curve(hourly)
        for offset in (0, BST_OFFSET_MINUTES):
            curves[(weekend, offset)] = tuple(local[(m + offset) % MINUTES_PER_DAY] for m in range(MINUTES_PER_DAY))
    return curves


_CURVES = _utc_curves()


def _mean(bounds: tuple[int, int]) -> float:
    return (bounds[0] + bounds[1]) / 2


def _events_mean_w(profile: ArchetypeProfile) -> float:
    """Expected mean power of an archetype's appliance events (EV excluded), from their odds."""
    kettle_wh = profile.kettle_uses_per_day * KETTLE_W * _mean(KETTLE_MINUTES) / MINUTES_PER_HOUR
    oven_wh = profile.oven_probability * OVEN_W * _mean(OVEN_MINUTES) / MINUTES_PER_HOUR
    wash_minutes = _mean(WASH_HEAT_MINUTES) + _mean(WASH_RINSE_MINUTES)
    wash_wh = profile.wash_probability * WASH_W * wash_minutes / MINUTES_PER_HOUR
    return (kettle_wh + oven_wh + wash_wh) / HOURS_PER_DAY


#: Mean length of an EV charging session, in minutes, that makes a year add up to EV_ANNUAL_KWH.
EV_MEAN_SESSION_MINUTES = (
    EV_ANNUAL_KWH * WH_PER_KWH / (DAYS_PER_YEAR * EV_NIGHT_PROBABILITY * EV_CHARGER_W) * MINUTES_PER_HOUR
)


def _check_factor(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class LoadModel:
    """The electricity demand of one simulated household, deterministic for a seed.

    The archetype's annual figure covers everything except EV charging: with ``ev=True`` about
    ``EV_ANNUAL_KWH`` (2,000 kWh) of 7 kW overnight charging is added on top, on roughly 40% of
    nights. The smooth curve is scaled analytically (annual target minus baseload minus the
    expected appliance energy) so a simulated year lands within a few percent of the target.

    ``multiplier`` (the interactive +/- control) and ``demand_factor`` (set below 1 to answer a
    grid "reduce usage" alert) both scale the whole power and can be changed at any time; the
    result is clamped to ``MAX_POWER_W`` minute by minute.
    """

    def __init__(self, archetype: Archetype | str, seed: int, multiplier: float = 1.0, ev: bool = False) -> None:
        try:
            self.archetype = Archetype(archetype)
        except ValueError:
            names = ", ".join(a.value for a in Archetype)
            raise ValueError(f"unknown archetype {archetype!r}; choose one of {names}") from None
        self.seed = seed
        self.ev = ev
        self.multiplier = multiplier
        self.demand_factor = 1.0
        self._profile = ARCHETYPES[self.archetype]
        mean_w = self._profile.annual_kwh * WH_PER_KWH / (DAYS_PER_YEAR * HOURS_PER_DAY)
        self._smooth_mean_w = mean_w - self._profile.baseload_w - _events_mean_w(self._profile)
        self._season_amplitude = SEASONAL_AMPLITUDE * mean_w / self._smooth_mean_w
        self._days: OrderedDict[int, _Day] = OrderedDict()
        self._events: OrderedDict[int, tuple[_Event, ...]] = OrderedDict()

    @property
    def multiplier(self) -> float:
        """Scale on the whole demand, for the interactive +/- mode."""
        return self._multiplier

    @multiplier.setter
    def multiplier(self, value: float) -> None:
        self._multiplier = _check_factor("multiplier", value)

    @property
    def demand_factor(self) -> float:
        """Scale on the whole demand for demand response: below 1 while a grid alert asks for less."""
        return self._demand_factor

    @demand_factor.setter
    def demand_factor(self, value: float) -> None:
        self._demand_factor = _check_factor("demand_factor", value)

    @property
    def nominal_annual_kwh(self) -> float:
        """The annual energy the model is calibrated to at factors of 1: archetype plus any EV."""
        return self._profile.annual_kwh + (EV_ANNUAL_KWH if self.ev else 0.0)

    def power_w(self, t: float) -> float:
        """Mean power in W over the minute of unix time that contains ``t``."""
        day = math.floor(t / SECONDS_PER_DAY)
        minute = min(int((t - day * SECONDS_PER_DAY) // SECONDS_PER_MINUTE), MINUTES_PER_DAY - 1)
        return min(self._day(day).watts[minute] * self._scale(), MAX_POWER_W)

    def energy_wh(self, t0: float, t1: float) -> float:
        """Energy in Wh used from unix time ``t0`` to ``t1``, integrated exactly minute by minute.

        Raises:
            ValueError: if ``t1`` is before ``t0``.
        """
        if t1 < t0:
            raise ValueError(f"energy_wh needs t0 <= t1, got t0={t0} t1={t1}")
        scale = self._scale()
        joules = 0.0
        t = t0
        while t < t1:
            day = math.floor(t / SECONDS_PER_DAY)
            day_start = day * SECONDS_PER_DAY
            segment_end = min(t1, day_start + SECONDS_PER_DAY)
            joules += self._day_joules(self._day(day), t - day_start, segment_end - day_start, scale)
            t = segment_end
        return joules / SECONDS_PER_HOUR

    def _scale(self) -> float:
        return self._multiplier * self._demand_factor

    @staticmethod
    def _day_joules(day: _Day, a: float, b: float, scale: float) -> float:
        """Energy in J between ``a`` and ``b`` seconds into a day, clamping each minute's power."""
        watts = day.watts

        def power(minute: int) -> float:
            return min(watts[minute] * scale, MAX_POWER_W)

        first = int(a // SECONDS_PER_MINUTE)
        last = int(b // SECONDS_PER_MINUTE)
        if first == last:
            return (b - a) * power(first)
        joules = ((first + 1) * SECONDS_PER_MINUTE - a) * power(first)
        if day.peak * scale <= MAX_POWER_W:
            joules += sum(watts[first + 1 : last]) * scale * SECONDS_PER_MINUTE
        else:
            joules += sum(power(m) for m in range(first + 1, last)) * SECONDS_PER_MINUTE
        if last < MINUTES_PER_DAY:
            joules += (b - last * SECONDS_PER_MINUTE) * power(last)
        return joules

    def _rng(self, day: int, stream: str) -> random.Random:
        """A generator for one day and one purpose, independent of every other day and purpose."""
        return random.Random(f"{self.seed}:{day}:{stream}")

    def _day(self, day: int) -> _Day:
        """The day's per-minute power, computed once and kept in a small cache."""
        cached = self._days.get(day)
        if cached is not None:
            self._days.move_to_end(day)
            return cached
        when = _EPOCH + timedelta(days=day)
        curve = _CURVES[(when.weekday() >= 5, uk_utc_offset_minutes(when))]
        rng = self._rng(day, "curve")
        season = 1 + self._season_amplitude * math.cos(
            2 * math.pi * (when.timetuple().tm_yday - SEASONAL_PEAK_DAY_OF_YEAR) / DAYS_PER_YEAR
        )
        # Log-normal factors with mu = -sigma^2/2 have a mean of exactly 1, keeping the calibration.
        level = self._smooth_mean_w * season * rng.lognormvariate(-(DAY_LEVEL_SIGMA**2) / 2, DAY_LEVEL_SIGMA)
        mu, sigma, draw = -(MINUTE_NOISE_SIGMA**2) / 2, MINUTE_NOISE_SIGMA, rng.lognormvariate
        base = self._profile.baseload_w
        watts = [base + level * shape * draw(mu, sigma) for shape in curve]
        # Events are drawn per day but may start before midnight UTC (BST) or run past it.
        for days_back in (-1, 0, 1):
            shift = days_back * MINUTES_PER_DAY
            for event in self._day_events(day + days_back):
                for minute in range(max(0, event.start + shift), min(MINUTES_PER_DAY, event.end + shift)):
                    watts[minute] += event.power_w
        result = _Day(tuple(watts), max(watts))
        self._days[day] = result
        if len(self._days) > _DAY_CACHE_SIZE:
            self._days.popitem(last=False)
        return result

    def _day_events(self, day: int) -> tuple[_Event, ...]:
        """The appliance runs drawn for one day, in minutes from the start of that UTC day."""
        cached = self._events.get(day)
        if cached is not None:
            return cached
        when = _EPOCH + timedelta(days=day)
        offset = uk_utc_offset_minutes(when)
        hourly = WEEKEND_SHAPE if when.weekday() >= 5 else WEEKDAY_SHAPE
        profile = self._profile
        rng = self._rng(day, "appliances")
        events: list[_Event] = []

        def add(local_start: int, minutes: int, power_w: float) -> None:
            events.append(_Event(local_start - offset, local_start - offset + minutes, power_w))

        uses = profile.kettle_uses_per_day
        kettle_hours = range(*KETTLE_HOURS_LOCAL)
        for _ in range(rng.randint(max(0, uses - KETTLE_USES_SPREAD), uses + KETTLE_USES_SPREAD)):
            # Boils follow the day's demand curve within waking hours: mostly mornings and evenings.
            hour = rng.choices(kettle_hours, weights=[hourly[h] for h in kettle_hours])[0]
            add(hour * MINUTES_PER_HOUR + rng.randrange(MINUTES_PER_HOUR), rng.randint(*KETTLE_MINUTES), KETTLE_W)
        if rng.random() < profile.oven_probability:
            add(rng.randint(*OVEN_START_LOCAL), rng.randint(*OVEN_MINUTES), OVEN_W)
        if rng.random() < profile.wash_probability:
            start = rng.randint(*WASH_START_LOCAL)
            heat = rng.randint(*WASH_HEAT_MINUTES)
            add(start, heat, WASH_W)
            add(start + heat + rng.randint(*WASH_GAP_MINUTES), rng.randint(*WASH_RINSE_MINUTES), WASH_W)
        if self.ev:
            # A separate stream, so turning EV charging on leaves the household's other events alone.
            ev_rng = self._rng(day, "ev")
            if ev_rng.random() < EV_NIGHT_PROBABILITY:
                low = round(EV_MEAN_SESSION_MINUTES * (1 - EV_DURATION_SPREAD))
                high = round(EV_MEAN_SESSION_MINUTES * (1 + EV_DURATION_SPREAD))
                add(ev_rng.randint(*EV_START_LOCAL), ev_rng.randint(low, high), EV_CHARGER_W)
        result = tuple(events)
        self._events[day] = result
        if len(self._events) > _DAY_CACHE_SIZE:
            self._events.popitem(last=False)
        return result


class Register:
    """A meter's cumulative energy register in whole Wh, which never goes down.

    Each ``advance`` adds the model's energy since the previous call; the fraction of a Wh not
    yet shown is carried to the next call, so rounding never loses energy. The energy added per
    call is capped at ``MAX_POWER_W`` over the elapsed time, whatever the model says.
    """

    def __init__(self, model: EnergyModel, start_time: float, start_wh: int) -> None:
        if start_wh < 0:
            raise ValueError(f"start_wh must be >= 0, got {start_wh}")
        self._model = model
        self._time = float(start_time)
        self._wh = int(start_wh)
        self._fraction_wh = 0.0

    @property
    def time(self) -> float:
        """Unix time the register was last advanced to."""
        return self._time

    @property
    def wh(self) -> Wh:
        """The register value in whole Wh."""
        return Wh(self._wh)

    @property
    def fraction_wh(self) -> float:
        """Energy used but not yet shown on the register, in [0, 1) Wh."""
        return self._fraction_wh

    def advance(self, t: float) -> Wh:
        """Add the energy used up to unix time ``t`` and return the new register value.

        Raises:
            ValueError: if ``t`` is before the time of the previous advance.
        """
        if t < self._time:
            raise ValueError(f"register time cannot go back: at {self._time}, asked for {t}")
        energy = self._model.energy_wh(self._time, t)
        ceiling = MAX_POWER_W * (t - self._time) / SECONDS_PER_HOUR
        self._fraction_wh += min(max(energy, 0.0), ceiling)
        whole = math.floor(self._fraction_wh)
        self._wh += whole
        self._fraction_wh -= whole
        self._time = float(t)
        return Wh(self._wh)


def history(
    model: EnergyModel, start: float, end: float, step: float = 1800, start_wh: int = 0
) -> list[tuple[int, Wh]]:
    """Register readings every ``step`` seconds after ``start`` up to ``end``, for provisioning.

    The register reads ``start_wh`` at ``start``; the first point is one step later and the
    last is the final whole step at or before ``end`` (7 days at 1800 s gives 336 points).
    Timestamps are whole seconds; continue live readings with a ``Register`` from the last point.

    Raises:
        ValueError: if ``step`` is under 1 second or ``end`` is before ``start``.
    """
    if not (math.isfinite(step) and step >= 1):
        raise ValueError(f"step must be at least 1 second, got {step!r}")
    if end < start:
        raise ValueError(f"history needs start <= end, got start={start} end={end}")
    register = Register(model, start, start_wh)
    points = []
    for k in range(1, int((end - start) // step) + 1):
        t = math.floor(start + k * step)
        points.append((t, register.advance(t)))
    return points
