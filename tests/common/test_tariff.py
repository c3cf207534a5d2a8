"""The Python reference of the tariff maths and reading checks (common.tariff)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import errors
from common.tariff import (
    CLOCK_GMT,
    CLOCK_LOCAL,
    MAX_REGISTER_WH,
    PERIOD_SECONDS,
    REJECT_ERRORS,
    ClockTable,
    MeterLedger,
    PriceRule,
    RejectReason,
    Schedule,
    TariffVersion,
    accrue,
    check_reading,
    flat_schedule,
    format_pounds,
    overflows,
    split,
    split_pair,
    standing_charge,
    uk_clock_changes,
)

SCHEDULE = flat_schedule(24_670, 57_210)
LEDGER = MeterLedger(active=True, last_seq=5, last_timestamp=1_000_800, last_energy_wh=50_000, last_export_wh=700)
LIMITS = {"now": 2_000_000, "max_power_w": 24_000, "max_future_skew": 300}
UK_CLOCK = ClockTable(tuple(uk_clock_changes(2026, 2027)))
#: Off-peak 00:30-05:30 at 8.5 p, peak 16:00-19:00 at 35 p, day rate 24.67 p otherwise.
BANDS = [0 if 1 <= h < 11 else 2 if 32 <= h < 38 else 1 for h in range(48)]
RATES = [8_500, 24_670, 35_000]


def utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp())


# ---------------------------------------------------------------- the split


@settings(max_examples=500, deadline=None)
@given(t0=st.integers(0, 2**32 - 10**6), span=st.integers(1, 10**6), delta=st.integers(0, 2**48 - 1))
def test_split_adds_up_to_the_delta_exactly_and_gives_each_period_its_share_of_time(
    t0: int, span: int, delta: int
) -> None:
    parts = split(t0, t0 + span, delta)
    assert sum(wh for _, wh in parts) == delta
    assert [p for p, _ in parts] == list(range(t0 // PERIOD_SECONDS, (t0 + span - 1) // PERIOD_SECONDS + 1))
    for p, wh in parts:
        seconds = min(t0 + span, (p + 1) * PERIOD_SECONDS) - max(t0, p * PERIOD_SECONDS)
        assert wh >= 0
        assert abs(wh * span - delta * seconds) < 2 * span  # within one Wh of its exact share


@settings(max_examples=200, deadline=None)
@given(times=st.lists(st.integers(1, 20_000), min_size=1, max_size=30),
       deltas=st.lists(st.integers(0, 50_000), min_size=30, max_size=30))
def test_over_a_billing_period_the_parts_add_up_to_the_register_delta(times: list[int], deltas: list[int]) -> None:
    t, total, per_period = 1_790_000_123, 0, 0
    for elapsed, delta in zip(times, deltas, strict=False):
        per_period += sum(wh for _, wh in split(t, t + elapsed, delta))
        total += delta
        t += elapsed
    assert per_period == total


def test_a_reading_across_a_boundary_is_split_in_proportion_to_time() -> None:
    assert split(1_000, 2_800, 1_800) == [(0, 800), (1, 1_000)]
    assert split(1_799, 1_801, 3) == [(0, 1), (1, 2)]  # floor(3 x 1 / 2) = 1 before the boundary
    assert split(0, 1_800, 7) == [(0, 7)]  # ends on a boundary: one period
    assert split_pair(1_000, 2_800, 1_800, 9) == [(0, 800, 4), (1, 1_000, 5)]
    with pytest.raises(ValueError):
        split(5, 5, 1)


# ---------------------------------------------------------------- prices, clocks and versions


def test_uk_clock_changes_come_from_the_time_zone_database() -> None:
    assert uk_clock_changes(2026, 2026) == [(utc(2026, 3, 29, 1), 60), (utc(2026, 10, 25, 1), 0)]
    assert UK_CLOCK.offset_minutes(utc(2026, 7, 1)) == 60
    assert UK_CLOCK.offset_minutes(utc(2026, 3, 29, 1) - 1) == 0
    assert ClockTable().offset_minutes(utc(2026, 7, 1)) == 0


@pytest.mark.parametrize(
    ("day", "clock", "off_peak_utc"),
    [
        ((2026, 1, 15), CLOCK_LOCAL, ("00:30", "05:30")),
        ((2026, 7, 15), CLOCK_LOCAL, ("23:30", "04:30")),
        ((2026, 7, 15), CLOCK_GMT, ("00:30", "05:30")),
    ],
    ids=["winter-clock", "summer-clock", "summer-gmt-economy-7"],
)
def test_a_band_table_applies_in_its_clock(day: tuple[int, int, int], clock: int,
                                           off_peak_utc: tuple[str, str]) -> None:
    schedule = Schedule([TariffVersion(0, 0, PriceRule.banded(BANDS, RATES), clock=clock)], UK_CLOCK)
    start = utc(*day) - 3_600  # one off-peak night in the 24 hours from 23:00 UTC the day before
    cheap = [dt.datetime.fromtimestamp(p * PERIOD_SECONDS, dt.timezone.utc).strftime("%H:%M")
             for p in range(start // PERIOD_SECONDS, start // PERIOD_SECONDS + 48)
             if schedule.prices(p)[0] == 8_500]
    assert (cheap[0], cheap[-1]) == (off_peak_utc[0], _minus_half_hour(off_peak_utc[1]))
    assert len(cheap) == 10


def _minus_half_hour(hhmm: str) -> str:
    t = dt.datetime.strptime(hhmm, "%H:%M") - dt.timedelta(minutes=30)
    return t.strftime("%H:%M")


@pytest.mark.parametrize(("day", "periods"), [((2026, 3, 29), 46), ((2026, 10, 25), 50), ((2026, 6, 1), 48)])
def test_clock_change_days_have_46_and_50_periods_and_each_local_half_hour_keeps_its_band(
    day: tuple[int, int, int], periods: int
) -> None:
    schedule = Schedule([TariffVersion(0, 0, PriceRule.banded(BANDS, RATES), clock=CLOCK_LOCAL)], UK_CLOCK)
    uk = ZoneInfo("Europe/London")
    start = int(dt.datetime(*day, tzinfo=uk).timestamp())
    end = int(dt.datetime.combine(dt.date(*day) + dt.timedelta(days=1), dt.time(), uk).timestamp())
    assert (end - start) // PERIOD_SECONDS == periods
    for p in range(start // PERIOD_SECONDS, end // PERIOD_SECONDS):
        local = dt.datetime.fromtimestamp(p * PERIOD_SECONDS, uk)
        h = local.hour * 2 + local.minute // 30
        assert schedule.prices(p)[0] == RATES[BANDS[h]], local


def test_day_ahead_prices_fall_back_where_not_published() -> None:
    schedule = Schedule([TariffVersion(0, 0, PriceRule.day_ahead(20_000), PriceRule.day_ahead(4_000))])
    schedule.publish(100, [31_000, 0], [7_000])
    assert [schedule.prices(p) for p in (99, 100, 101, 102)] == [
        (20_000, 4_000), (31_000, 7_000), (0, 4_000), (20_000, 4_000)]


def test_the_version_in_force_prices_each_period() -> None:
    schedule = Schedule([TariffVersion.flat(10_000, 0), TariffVersion.flat(20_000, 0, 3_600, export_rate=5_000)])
    assert [schedule.prices(p) for p in (0, 1, 2)] == [(10_000, 0), (10_000, 0), (20_000, 5_000)]


def test_tariff_version_round_trips_through_the_contract_struct() -> None:
    version = TariffVersion(1_800, 57_210, PriceRule.banded(BANDS, RATES), PriceRule.day_ahead(4_100), CLOCK_LOCAL)
    assert TariffVersion.from_struct(version.as_struct()) == version
    assert version.import_rule.packed_bands >> 144 == 0


def test_standing_charge_is_each_versions_share_of_time_rounded_down_once() -> None:
    versions = [TariffVersion.flat(1, 57_210), TariffVersion.flat(1, 86_400, 86_400)]
    assert standing_charge(versions, 0, 86_400) == 57_210_000
    assert standing_charge(versions, 43_200, 129_600) == (43_200 * 57_210 + 43_200 * 86_400) * 1_000 // 86_400
    assert standing_charge(versions, 0, 1) == 662  # 57,210,000 / 86,400 = 662.15...
    assert standing_charge(versions, 5, 5) == 0


# ---------------------------------------------------------------- ledgers and checks


def test_a_reading_is_priced_per_period_and_export_is_credited() -> None:
    schedule = Schedule([TariffVersion(0, 0, PriceRule.banded(BANDS, RATES), PriceRule.flat(15_000))])
    start = utc(2026, 1, 15, 4, 45)  # 04:45 GMT: off-peak until 05:30, then the day rate
    ledger = MeterLedger(True, 1, start, 1_000, 0)
    after = accrue(ledger, 2, start + 5_400, 1_900, 300, schedule)  # 90 minutes: 45 off-peak, 45 day
    assert after.period_import_cost == 450 * 8_500 + 450 * 24_670
    assert after.period_export_credit == 300 * 15_000
    assert (after.last_seq, after.last_timestamp, after.last_energy_wh, after.last_export_wh) == (
        2, start + 5_400, 1_900, 300)


@pytest.mark.parametrize(
    ("ledger", "seq", "timestamp", "energy_wh", "export_wh", "reason"),
    [
        (LEDGER, 6, 1_000_860, 50_010, 700, RejectReason.NONE),
        (MeterLedger(False, 5, 1_000_800, 50_000), 6, 1_000_860, 50_010, 0, RejectReason.METER_NOT_ACTIVE),
        (LEDGER, 2**32, 1_000_860, 50_010, 700, RejectReason.OUT_OF_RANGE),
        (LEDGER, 6, 2**32, 50_010, 700, RejectReason.OUT_OF_RANGE),
        (LEDGER, 6, 1_000_860, MAX_REGISTER_WH + 1, 700, RejectReason.OUT_OF_RANGE),
        (LEDGER, 6, 1_000_860, 50_010, MAX_REGISTER_WH + 1, RejectReason.OUT_OF_RANGE),
        (LEDGER, 5, 1_000_860, 50_010, 700, RejectReason.STALE_SEQUENCE),
        (LEDGER, 6, 1_000_800, 50_010, 700, RejectReason.STALE_TIMESTAMP),
        (LEDGER, 6, 2_000_301, 50_010, 700, RejectReason.FUTURE_TIMESTAMP),
        (LEDGER, 6, 2_000_300, 50_010, 700, RejectReason.NONE),
        (LEDGER, 6, 1_000_860, 49_999, 700, RejectReason.REGISTER_DECREASED),
        (LEDGER, 6, 1_000_860, 50_010, 699, RejectReason.REGISTER_DECREASED),
        (LEDGER, 6, 1_001_160, 52_400, 3_100, RejectReason.NONE),
        (LEDGER, 6, 1_001_160, 52_401, 700, RejectReason.IMPLAUSIBLE_DELTA),
        (LEDGER, 6, 1_001_160, 50_000, 3_101, RejectReason.IMPLAUSIBLE_DELTA),
    ],
    ids=[
        "plausible", "inactive", "seq-over-32-bits", "timestamp-over-32-bits", "register-over-48-bits",
        "export-over-48-bits", "stale-seq", "stale-timestamp", "beyond-skew", "at-skew", "decreased",
        "export-decreased", "at-max-power", "over-max-power", "export-over-max-power",
    ],
)
def test_check_reading_gives_the_contract_reason(
    ledger: MeterLedger, seq: int, timestamp: int, energy_wh: int, export_wh: int, reason: RejectReason
) -> None:
    assert check_reading(ledger, seq, timestamp, energy_wh, export_wh, **LIMITS) is reason


def test_check_reading_applies_the_checks_in_the_contract_order() -> None:
    inactive = MeterLedger(False, 5, 1_000_000, 50_000)
    assert check_reading(inactive, 2**32, 0, 0, **LIMITS) is RejectReason.METER_NOT_ACTIVE
    assert check_reading(LEDGER, 2**32, 0, 0, **LIMITS) is RejectReason.OUT_OF_RANGE
    assert check_reading(LEDGER, 1, 0, 0, **LIMITS) is RejectReason.STALE_SEQUENCE
    assert check_reading(LEDGER, 6, 0, 0, **LIMITS) is RejectReason.STALE_TIMESTAMP
    assert check_reading(LEDGER, 6, 3_000_000, 0, **LIMITS) is RejectReason.FUTURE_TIMESTAMP


def test_every_reject_reason_but_none_maps_to_an_error_with_its_code() -> None:
    assert set(REJECT_ERRORS) == set(RejectReason) - {RejectReason.NONE}
    assert REJECT_ERRORS[RejectReason.STALE_SEQUENCE].code == "stale_sequence"
    assert REJECT_ERRORS[RejectReason.METER_NOT_ACTIVE] is errors.MeterInactive
    assert all(REJECT_ERRORS[r].code == r.name.lower() for r in RejectReason if r not in (
        RejectReason.NONE, RejectReason.METER_NOT_ACTIVE
    ))


def test_overflows_flags_a_period_that_no_longer_fits_the_contract_fields() -> None:
    assert not overflows(MeterLedger(True, 1, 1, 1, 0, 2**48 - 1, 2**47 - 1))
    assert overflows(MeterLedger(True, 1, 1, 1, period_import_cost=2**48))
    assert overflows(MeterLedger(True, 1, 1, 1, period_export_credit=2**47))


@pytest.mark.parametrize(
    ("micropence", "text"),
    [
        (0, "£0.00"),
        (81_880_000, "£0.82"),
        (1_499_999, "£0.01"),
        (1_500_001, "£0.02"),
        (100_000_000, "£1.00"),
        (1_234_567_000_000, "£12,345.67"),
        (-1_234_567_000_000, "-£12,345.67"),
    ],
)
def test_format_pounds_rounds_to_the_penny_with_thousands_separators(micropence: int, text: str) -> None:
    assert format_pounds(micropence) == text
