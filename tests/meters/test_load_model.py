"""Tests for meters.load_model: calibration, daily and seasonal shape, determinism, register, history."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from meters.load_model import (
    ARCHETYPES,
    EV_ANNUAL_KWH,
    MAX_POWER_W,
    Archetype,
    LoadModel,
    Register,
    history,
    uk_utc_offset_minutes,
)

HOUR = 3_600
DAY = 86_400


def utc(year: int, month: int, day: int, hour: int = 0) -> float:
    return datetime(year, month, day, hour, tzinfo=timezone.utc).timestamp()


def mean_hourly_wh(model: LoadModel, start: float, days: int, hours: range, *, weekend: bool | None = None) -> float:
    """Mean energy per hour over the given UTC hours of each day (optionally weekdays or weekends only)."""
    total, count = 0.0, 0
    for d in range(days):
        day_start = start + d * DAY
        is_weekend = datetime.fromtimestamp(day_start, timezone.utc).weekday() >= 5
        if weekend is not None and is_weekend != weekend:
            continue
        for h in hours:
            total += model.energy_wh(day_start + h * HOUR, day_start + (h + 1) * HOUR)
            count += 1
    return total / count


# Winter weeks, when UK local time is UTC, so UTC hours are local hours.
WINTER = utc(2023, 1, 2)
WINTER_DAYS = 56


@pytest.mark.parametrize("archetype", list(Archetype))
def test_a_simulated_year_is_within_10_percent_of_the_archetype_annual_value(archetype: Archetype) -> None:
    model = LoadModel(archetype, seed=1)
    kwh = model.energy_wh(utc(2023, 1, 1), utc(2024, 1, 1)) / 1000
    assert kwh == pytest.approx(ARCHETYPES[archetype].annual_kwh, rel=0.10)


def test_ev_charging_adds_its_annual_energy_on_top_of_the_archetype() -> None:
    model = LoadModel("medium", seed=1, ev=True)
    kwh = model.energy_wh(utc(2023, 1, 1), utc(2024, 1, 1)) / 1000
    assert model.nominal_annual_kwh == ARCHETYPES[Archetype.MEDIUM].annual_kwh + EV_ANNUAL_KWH
    assert kwh == pytest.approx(model.nominal_annual_kwh, rel=0.10)


def test_ev_charging_happens_overnight_at_charger_power() -> None:
    with_ev, without = LoadModel("low", seed=3, ev=True), LoadModel("low", seed=3)
    start = WINTER
    extra = [with_ev.power_w(start + m * 60) - without.power_w(start + m * 60) for m in range(14 * 24 * 60)]
    charging = [m for m, watts in enumerate(extra) if watts > 0]
    assert charging, "expected at least one charging session in two weeks"
    assert all(extra[m] == pytest.approx(7_000) for m in charging)
    assert all((m % (24 * 60)) // 60 in (23, 0, 1, 2, 3, 4, 5) for m in charging)


def test_evening_peak_is_higher_than_the_small_hours() -> None:
    model = LoadModel("medium", seed=2)
    evening = mean_hourly_wh(model, WINTER, WINTER_DAYS, range(17, 21))
    small_hours = mean_hourly_wh(model, WINTER, WINTER_DAYS, range(2, 5))
    assert evening > 2 * small_hours


def test_morning_peak_is_higher_than_the_night() -> None:
    model = LoadModel("medium", seed=2)
    morning = mean_hourly_wh(model, WINTER, WINTER_DAYS, range(7, 9), weekend=False)
    night = mean_hourly_wh(model, WINTER, WINTER_DAYS, range(2, 5), weekend=False)
    assert morning > 1.5 * night


def test_evening_is_the_main_peak() -> None:
    model = LoadModel("medium", seed=2)
    evening = mean_hourly_wh(model, WINTER, WINTER_DAYS, range(17, 21))
    morning = mean_hourly_wh(model, WINTER, WINTER_DAYS, range(7, 9))
    assert evening > morning


def test_weekends_start_later_and_stay_busier_through_the_day() -> None:
    model = LoadModel("medium", seed=4)
    early_weekday = mean_hourly_wh(model, WINTER, WINTER_DAYS, range(6, 8), weekend=False)
    early_weekend = mean_hourly_wh(model, WINTER, WINTER_DAYS, range(6, 8), weekend=True)
    midday_weekday = mean_hourly_wh(model, WINTER, WINTER_DAYS, range(10, 14), weekend=False)
    midday_weekend = mean_hourly_wh(model, WINTER, WINTER_DAYS, range(10, 14), weekend=True)
    assert early_weekday > 1.1 * early_weekend
    assert midday_weekend > 1.1 * midday_weekday


def test_winter_demand_is_higher_than_summer() -> None:
    model = LoadModel("medium", seed=5)
    january = model.energy_wh(utc(2023, 1, 1), utc(2023, 2, 1))
    july = model.energy_wh(utc(2023, 7, 1), utc(2023, 8, 1))
    assert january > 1.15 * july


def test_daily_shape_follows_uk_local_time_in_summer() -> None:
    model = LoadModel("high", seed=6)
    summer = utc(2023, 6, 5)
    # The 17:00-21:00 BST peak is 16:00-20:00 UTC; 02:00-05:00 BST is 01:00-04:00 UTC.
    assert mean_hourly_wh(model, summer, 28, range(16, 20)) > 2 * mean_hourly_wh(model, summer, 28, range(1, 4))


def test_the_same_seed_gives_the_same_energy_whatever_was_asked_before() -> None:
    t0, t1 = utc(2023, 3, 10, 6) + 17.5, utc(2023, 3, 12, 21) + 3.25
    fresh = LoadModel("high", seed=42).energy_wh(t0, t1)
    busy = LoadModel("high", seed=42)
    for day in range(40):
        busy.energy_wh(utc(2023, 1, 1) + day * DAY, utc(2023, 1, 1) + day * DAY + 7 * HOUR)
    busy.power_w(utc(2025, 1, 1))
    assert busy.energy_wh(t0, t1) == fresh
    assert busy.power_w(t0) == LoadModel("high", seed=42).power_w(t0)


def test_different_seeds_give_different_demand() -> None:
    t0, t1 = utc(2023, 3, 10), utc(2023, 3, 11)
    assert LoadModel("high", seed=1).energy_wh(t0, t1) != LoadModel("high", seed=2).energy_wh(t0, t1)


def test_energy_over_split_intervals_adds_up_to_the_whole() -> None:
    model = LoadModel("low", seed=7)
    t0, t1, t2 = utc(2023, 5, 1, 22) + 0.4, utc(2023, 5, 2, 0) + 31.7, utc(2023, 5, 2, 3) + 12
    assert model.energy_wh(t0, t1) + model.energy_wh(t1, t2) == pytest.approx(model.energy_wh(t0, t2), rel=1e-12)


def test_energy_over_one_minute_matches_its_mean_power() -> None:
    model = LoadModel("medium", seed=8)
    t = utc(2023, 2, 1, 18) + 120
    assert model.energy_wh(t, t + 60) == pytest.approx(model.power_w(t) * 60 / HOUR)


def test_baseload_keeps_power_positive_at_every_minute() -> None:
    model = LoadModel("low", seed=9)
    baseload = ARCHETYPES[Archetype.LOW].baseload_w
    assert min(model.power_w(WINTER + m * 60) for m in range(24 * 60)) >= baseload


def test_multiplier_and_demand_factor_scale_energy() -> None:
    t0, t1 = utc(2023, 4, 1), utc(2023, 4, 2)
    model = LoadModel("medium", seed=10)
    normal = model.energy_wh(t0, t1)
    model.multiplier = 2.0
    assert model.energy_wh(t0, t1) == pytest.approx(2 * normal)
    model.demand_factor = 0.5
    assert model.energy_wh(t0, t1) == pytest.approx(normal)
    assert LoadModel("medium", seed=10, multiplier=0.5).energy_wh(t0, t1) == pytest.approx(normal / 2)


def test_power_is_clamped_to_the_maximum() -> None:
    model = LoadModel("high", seed=11, multiplier=100.0, ev=True)
    t0 = WINTER
    assert max(model.power_w(t0 + m * 60) for m in range(24 * 60)) == MAX_POWER_W
    assert model.energy_wh(t0, t0 + DAY) <= MAX_POWER_W * 24


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"archetype": "huge"}, "unknown archetype"),
        ({"multiplier": -1.0}, "multiplier"),
        ({"multiplier": float("nan")}, "multiplier"),
    ],
)
def test_bad_model_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"archetype": "low", "seed": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        LoadModel(**arguments)  # type: ignore[arg-type]


def test_bad_demand_factor_is_rejected() -> None:
    with pytest.raises(ValueError, match="demand_factor"):
        LoadModel("low", 1).demand_factor = -0.1


def test_energy_over_a_backwards_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="t0 <= t1"):
        LoadModel("low", 1).energy_wh(100.0, 50.0)


def test_uk_offset_follows_british_summer_time() -> None:
    assert uk_utc_offset_minutes(date(2024, 1, 15)) == 0
    assert uk_utc_offset_minutes(date(2024, 3, 30)) == 0
    assert uk_utc_offset_minutes(date(2024, 3, 31)) == 60
    assert uk_utc_offset_minutes(date(2024, 10, 26)) == 60
    assert uk_utc_offset_minutes(date(2024, 10, 27)) == 0


def test_register_never_decreases_and_loses_no_energy_to_rounding() -> None:
    model = LoadModel("medium", seed=12)
    start = utc(2023, 11, 20) + 0.5
    register = Register(model, start, start_wh=1_000)
    t, previous = start, register.wh
    for k in range(2_000):
        t += 7.3 + (k % 5)  # short, uneven steps: most add under 1 Wh
        value = register.advance(t)
        assert value >= previous
        previous = value
    exact = 1_000 + model.energy_wh(start, t)
    assert register.wh + register.fraction_wh == pytest.approx(exact, abs=1e-6)
    assert register.wh == int(exact)
    assert 0 <= register.fraction_wh < 1


class FixedEnergy:
    """A stand-in model that reports the same energy for any interval."""

    def __init__(self, wh: float) -> None:
        self.wh = wh

    def energy_wh(self, t0: float, t1: float) -> float:
        return self.wh


def test_register_carries_fractions_of_a_wh_between_advances() -> None:
    register = Register(FixedEnergy(0.25), 0.0, start_wh=5)
    values = [register.advance(float(k)) for k in range(1, 11)]
    assert values == [5, 5, 5, 6, 6, 6, 6, 7, 7, 7]
    assert register.fraction_wh == 0.5


def test_register_caps_energy_at_the_maximum_power() -> None:
    register = Register(FixedEnergy(1e9), 0.0, start_wh=0)
    assert register.advance(3_600.0) == int(MAX_POWER_W)


def test_register_rejects_time_going_backwards() -> None:
    register = Register(FixedEnergy(1.0), 100.0, start_wh=0)
    register.advance(200.0)
    with pytest.raises(ValueError, match="cannot go back"):
        register.advance(150.0)


def test_history_gives_336_half_hourly_points_for_seven_days() -> None:
    model = LoadModel("medium", seed=13)
    end = utc(2023, 10, 29, 12)
    start = end - 7 * DAY
    points = history(model, start, end, start_wh=50_000)
    assert len(points) == 336
    assert [t for t, _ in points] == [int(start) + 1_800 * k for k in range(1, 337)]
    assert points[-1][0] == end
    registers = [wh for _, wh in points]
    assert registers == sorted(registers)
    assert registers[-1] == 50_000 + int(model.energy_wh(start, end))


def test_history_rejects_a_bad_step_or_range() -> None:
    model = LoadModel("low", seed=1)
    with pytest.raises(ValueError, match="step"):
        history(model, 0.0, 3_600.0, step=0)
    with pytest.raises(ValueError, match="start <= end"):
        history(model, 3_600.0, 0.0)


def test_history_of_an_empty_range_is_empty() -> None:
    assert history(LoadModel("low", seed=1), 1_000.0, 1_000.0 + 1_799) == []


def test_a_week_of_history_is_reproducible_for_a_seed() -> None:
    start = utc(2023, 12, 1)
    first = history(LoadModel("high", seed=14), start, start + 7 * DAY)
    again = history(LoadModel("high", seed=14), start, start + 7 * DAY)
    assert first == again
    assert first != history(LoadModel("high", seed=15), start, start + 7 * DAY)


def test_history_timestamps_are_whole_seconds() -> None:
    points = history(LoadModel("low", seed=1), utc(2023, 1, 1) + 0.75, utc(2023, 1, 1) + timedelta(hours=2).seconds)
    assert all(isinstance(t, int) for t, _ in points)
