"""Households with solar panels and batteries: a UK generation curve by season and weather, and
the import and export registers they drive."""

from __future__ import annotations

import datetime as dt

import pytest

from common.tariff import MeterLedger, Schedule, TariffVersion, accrue
from meters.household import Battery, Household, Registers, SolarModel, household_history
from meters.load_model import LoadModel
from meters.sources import ModelSource


def utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp())


def yield_kwh(solar: SolarModel, start: int, days: int) -> float:
    return sum(solar.power_w(t) * 600 / 3_600 for t in range(start, start + days * 86_400, 600)) / 1_000


def test_a_3_5_kwp_array_makes_a_uk_years_yield_mostly_in_summer() -> None:
    solar = SolarModel(3.5, seed=11)
    year = yield_kwh(solar, utc(2026, 1, 1), 365)
    assert 700 * 3.5 <= year <= 1_000 * 3.5  # MCS: 800-900 kWh per kWp in central and northern England
    june, december = yield_kwh(solar, utc(2026, 6, 1), 30), yield_kwh(solar, utc(2026, 12, 1), 30)
    assert june > 4 * december
    assert solar.power_w(utc(2026, 6, 21, 0)) == 0.0  # midnight
    assert solar.power_w(utc(2026, 6, 21, 12)) <= 3_500  # never above the rating


def test_weather_makes_some_days_much_sunnier_than_others() -> None:
    solar = SolarModel(4.0, seed=3)
    days = [yield_kwh(solar, utc(2026, 7, 1) + d * 86_400, 1) for d in range(30)]
    assert max(days) > 2.5 * min(days)


@pytest.mark.parametrize("kwp", [0, -1, 25])
def test_an_array_outside_domestic_sizes_is_refused(kwp: float) -> None:
    with pytest.raises(ValueError):
        SolarModel(kwp, seed=1)


def test_a_solar_home_exports_on_a_summer_afternoon_and_imports_less_than_without_panels() -> None:
    start, end = utc(2026, 6, 20, 11), utc(2026, 6, 20, 15)
    plain = Household(LoadModel("medium", seed=5))
    solar = Household(LoadModel("medium", seed=5), SolarModel(3.5, seed=5))
    plain_in, plain_out = plain.flows_wh(start, end)
    solar_in, solar_out = solar.flows_wh(start, end)
    assert plain_out == 0 and solar_out > 2_000
    assert solar_in < plain_in


def test_a_battery_stores_the_surplus_so_less_is_exported_and_less_imported_in_the_evening() -> None:
    day = utc(2026, 6, 20)
    bare = Household(LoadModel("medium", seed=5), SolarModel(3.5, seed=5))
    stored = Household(LoadModel("medium", seed=5), SolarModel(3.5, seed=5), Battery(5_000, stored_wh=1))
    bare_in, bare_out = bare.flows_wh(day, day + 86_400)
    stored_in, stored_out = stored.flows_wh(day, day + 86_400)
    assert stored_out < bare_out and stored_in < bare_in
    assert 0 <= stored.battery.stored_wh <= 5_000  # type: ignore[union-attr]


def test_registers_are_whole_wh_that_never_go_down_and_add_up_however_often_they_are_read() -> None:
    household = Household(LoadModel("high", seed=9), SolarModel(4.0, seed=9))
    start = utc(2026, 5, 10, 6)
    often = Registers(household, start, 1_000, 200)
    readings = [often.advance(start + 37 * k) for k in range(1, 600)]
    assert all(b[0] >= a[0] and b[1] >= a[1] for a, b in zip(readings, readings[1:], strict=False))
    once = Registers(Household(LoadModel("high", seed=9), SolarModel(4.0, seed=9)), start, 1_000, 200)
    total = once.advance(start + 37 * 599)
    assert abs(total[0] - readings[-1][0]) <= 1 and abs(total[1] - readings[-1][1]) <= 1


def test_an_exporting_meters_bill_goes_down_on_a_sunny_afternoon() -> None:
    """With an export rate (15 p) below the import rate (24.67 p), the credit still outruns the cost."""
    household = Household(LoadModel("low", seed=21), SolarModel(4.0, seed=21))
    start = utc(2026, 6, 12, 12)
    points = household_history(household, start, start + 3 * 3_600, 1_800, 5_000, 0)
    schedule = Schedule([TariffVersion.flat(24_670, 0, 0, 15_000)])
    ledger = MeterLedger(True, 0, start, 5_000)
    for seq, (t, imported, exported) in enumerate(points, start=1):
        ledger = accrue(ledger, seq, t, imported, exported, schedule)
    assert ledger.period_export_credit > ledger.period_import_cost


def test_a_model_source_wraps_a_bare_load_model_as_a_home_without_panels() -> None:
    source = ModelSource(LoadModel("medium", seed=2), utc(2026, 6, 20, 12), 100)
    assert source.register_at(utc(2026, 6, 20, 13)) > 100
    assert source.export_at(utc(2026, 6, 20, 13)) == 0
