"""A household's import and export: its demand (``LoadModel``), solar panels and a home battery.

``SolarModel`` is a UK rooftop array: the sun's elevation over central England (52.5 N,
1.5 W) by day of year and time, a clear-sky output for the array's peak rating (kWp) after
system losses, and the day's weather drawn per (seed, day): sunny, mixed (passing cloud, ten
minutes at a time) or overcast, with sunny days likelier in summer. A 3.5 kWp array makes
about 2,700-2,900 kWh a year (775-830 kWh per kWp, near the 800-900 the MCS tables give for
central and northern England), three quarters of it from April to September.

``Household`` nets demand against generation minute by minute: a surplus charges the battery
(if any) and the rest is exported; a shortfall is met from the battery and the rest is
imported. ``Registers`` turns that into the meter's two cumulative registers in whole Wh.
The battery's charge is state, so a household is advanced forward in time only.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from meters.load_model import MAX_POWER_W, LoadModel

__all__ = ["SolarModel", "Battery", "Household", "Registers", "household_history"]

LATITUDE_DEG = 52.5
LONGITUDE_DEG = -1.5
SECONDS_PER_MINUTE = 60
SECONDS_PER_DAY = 86_400
#: Inverter, wiring, soiling and temperature losses: a system delivers about 85% of its rating.
PERFORMANCE_RATIO = 0.85
#: (probability of a sunny day, of an overcast one) in midwinter and midsummer; the rest are mixed.
WEATHER_WINTER = (0.15, 0.50)
WEATHER_SUMMER = (0.40, 0.20)
SUNNY = (0.90, 1.0)
MIXED = (0.35, 0.90)
OVERCAST = (0.08, 0.25)


def sun_height(t: float) -> float:
    """The sine of the sun's elevation over central England at unix time ``t`` (negative at night)."""
    day_of_year = (t / SECONDS_PER_DAY + 0.5) % 365.25
    declination = math.radians(23.44) * math.sin(2 * math.pi * (284 + day_of_year) / 365.25)
    solar_hours = (t % SECONDS_PER_DAY) / 3_600 + LONGITUDE_DEG / 15
    hour_angle = math.radians(15 * (solar_hours - 12))
    lat = math.radians(LATITUDE_DEG)
    return math.sin(lat) * math.sin(declination) + math.cos(lat) * math.cos(declination) * math.cos(hour_angle)


class SolarModel:
    """A rooftop array of ``kwp`` kilowatts peak, deterministic for a seed."""

    def __init__(self, kwp: float, seed: int) -> None:
        if not 0 < kwp <= 20:
            raise ValueError(f"a domestic array is 0-20 kWp, not {kwp}")
        self.kwp = kwp
        self.seed = seed
        self._weather: dict[int, tuple[float, float, float]] = {}

    def _day_weather(self, day: int) -> tuple[float, float, float]:
        """(low, high) output factor for the day and how changeable it is (0 steady, 1 passing cloud)."""
        cached = self._weather.get(day)
        if cached is None:
            rng = random.Random(f"{self.seed}:{day}:weather")
            summer = (1 - math.cos(2 * math.pi * ((day + 10) % 365.25) / 365.25)) / 2  # 0 late Dec, 1 late Jun
            p_sunny = WEATHER_WINTER[0] + (WEATHER_SUMMER[0] - WEATHER_WINTER[0]) * summer
            p_overcast = WEATHER_WINTER[1] + (WEATHER_SUMMER[1] - WEATHER_WINTER[1]) * summer
            roll = rng.random()
            low, high = SUNNY if roll < p_sunny else OVERCAST if roll < p_sunny + p_overcast else MIXED
            cached = (low, high, 1.0 if (low, high) == MIXED else 0.2)
            if len(self._weather) > 64:
                self._weather.clear()
            self._weather[day] = cached
        return cached

    def power_w(self, t: float) -> float:
        """Mean output in W over the minute of unix time that contains ``t``."""
        minute_start = t - t % SECONDS_PER_MINUTE
        height = sun_height(minute_start + 30)
        if height <= 0:
            return 0.0
        day = int(minute_start // SECONDS_PER_DAY)
        low, high, changeable = self._day_weather(day)
        block = int(minute_start // 600)  # clouds pass ten minutes at a time
        cloud = random.Random(f"{self.seed}:{block}:cloud").random()
        factor = high - (high - low) * (changeable * cloud + (1 - changeable) * 0.5)
        # Thicker air near the horizon: output falls faster than the sun's height.
        return float(self.kwp * 1_000 * PERFORMANCE_RATIO * factor * height ** 1.15)


@dataclass
class Battery:
    """A home battery: usable capacity, the most it charges or discharges at, and its state."""

    capacity_wh: float
    max_power_w: float = 2_500.0
    #: Share of the energy put in that comes back out.
    round_trip: float = 0.90
    stored_wh: float = 0.0

    def __post_init__(self) -> None:
        self.stored_wh = min(self.stored_wh or self.capacity_wh / 2, self.capacity_wh)


class Household:
    """A home's demand, solar panels (optional) and battery (optional), netted at the meter."""

    def __init__(self, load: LoadModel, solar: SolarModel | None = None, battery: Battery | None = None) -> None:
        self.load = load
        self.solar = solar
        self.battery = battery

    def flows_wh(self, t0: float, t1: float) -> tuple[float, float]:
        """Energy imported and exported from ``t0`` to ``t1`` (advancing the battery's state)."""
        if t1 < t0:
            raise ValueError(f"flows_wh needs t0 <= t1, got t0={t0} t1={t1}")
        if self.solar is None:
            return self.load.energy_wh(t0, t1), 0.0
        imported = exported = 0.0
        t = t0
        while t < t1:
            end = min(t1, t - t % SECONDS_PER_MINUTE + SECONDS_PER_MINUTE)
            hours = (end - t) / 3_600
            net_w = self.load.power_w(t) - self.solar.power_w(t)
            battery = self.battery
            if battery is not None:
                if net_w < 0:  # surplus: charge first
                    room_w = (battery.capacity_wh - battery.stored_wh) / hours / battery.round_trip
                    charge_w = min(-net_w, battery.max_power_w, max(room_w, 0.0))
                    battery.stored_wh += charge_w * hours * battery.round_trip
                    net_w += charge_w
                elif net_w > 0:  # shortfall: discharge first
                    discharge_w = min(net_w, battery.max_power_w, battery.stored_wh / hours)
                    battery.stored_wh -= discharge_w * hours
                    net_w -= discharge_w
            if net_w > 0:
                imported += net_w * hours
            else:
                exported += -net_w * hours
            t = end
        return imported, exported


class Registers:
    """A meter's import and export registers in whole Wh, which never go down.

    As ``load_model.Register`` does for import alone: fractions of a Wh carry to the next
    advance, and each register's growth is capped at ``MAX_POWER_W`` over the elapsed time.
    """

    def __init__(self, household: Household, start_time: float, import_wh: int, export_wh: int = 0) -> None:
        self.household = household
        self.time = float(start_time)
        self.import_wh = int(import_wh)
        self.export_wh = int(export_wh)
        self._fractions = [0.0, 0.0]

    def advance(self, t: float) -> tuple[int, int]:
        """Add the flows up to ``t``; returns (import, export) registers."""
        if t < self.time:
            raise ValueError(f"register time cannot go back: at {self.time}, asked for {t}")
        flows = self.household.flows_wh(self.time, t)
        ceiling = MAX_POWER_W * (t - self.time) / 3_600
        wholes = []
        for i, energy in enumerate(flows):
            self._fractions[i] += min(max(energy, 0.0), ceiling)
            whole = math.floor(self._fractions[i])
            self._fractions[i] -= whole
            wholes.append(whole)
        self.import_wh += wholes[0]
        self.export_wh += wholes[1]
        self.time = float(t)
        return self.import_wh, self.export_wh


def household_history(household: Household, start: float, end: float, step: float = 1_800, import_wh: int = 0,
                      export_wh: int = 0) -> list[tuple[int, int, int]]:
    """(time, import, export) readings every ``step`` seconds after ``start`` up to ``end``, for provisioning."""
    registers = Registers(household, start, import_wh, export_wh)
    points = []
    for k in range(1, int((end - start) // step) + 1):
        t = math.floor(start + k * step)
        points.append((t, *registers.advance(t)))
    return points
