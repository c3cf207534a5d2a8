"""The Python reference of the tariff maths and reading checks (common.tariff)."""

from __future__ import annotations

import pytest

from common import errors
from common.tariff import (
    MAX_REGISTER_WH,
    REJECT_ERRORS,
    MeterLedger,
    RejectReason,
    Tariff,
    accrue,
    check_reading,
    format_pounds,
    overflows,
)

TARIFF = Tariff(unit_rate=24_670, standing_charge=57_210)
LEDGER = MeterLedger(active=True, last_seq=5, last_timestamp=1_000_000, last_energy_wh=50_000)
LIMITS = {"now": 2_000_000, "max_power_w": 24_000, "max_future_skew": 300}


def test_a_day_at_one_kwh_costs_the_unit_rate_plus_one_standing_charge() -> None:
    after = accrue(LEDGER, 6, LEDGER.last_timestamp + 86_400, LEDGER.last_energy_wh + 1_000, TARIFF)
    assert after.period_energy_wh == 1_000
    assert after.period_energy_cost == 24_670_000
    assert after.period_standing_charge == 57_210_000
    assert after.amount_due == 81_880_000
    assert (after.last_seq, after.last_timestamp, after.last_energy_wh) == (6, 1_086_400, 51_000)


def test_standing_charge_is_rounded_down_once_per_reading() -> None:
    one = accrue(LEDGER, 6, LEDGER.last_timestamp + 1, LEDGER.last_energy_wh, TARIFF)
    two = accrue(one, 7, LEDGER.last_timestamp + 2, LEDGER.last_energy_wh, TARIFF)
    assert one.period_standing_charge == 662  # 57,210,000 / 86,400 = 662.15...
    assert two.period_standing_charge == 1_324  # not 1,324.3 -> 1,324 from a single two-second step
    assert accrue(LEDGER, 6, LEDGER.last_timestamp + 2, LEDGER.last_energy_wh, TARIFF).period_standing_charge == 1_324


def test_accrue_adds_to_the_open_period_and_leaves_the_input_unchanged() -> None:
    first = accrue(LEDGER, 6, 1_003_600, 51_000, TARIFF)
    second = accrue(first, 7, 1_007_200, 51_500, Tariff(10_000, 0))
    assert second.period_energy_wh == 1_500
    assert second.period_energy_cost == 1_000 * 24_670 + 500 * 10_000
    assert second.period_standing_charge == first.period_standing_charge
    assert LEDGER.period_energy_wh == 0


@pytest.mark.parametrize(
    ("ledger", "seq", "timestamp", "energy_wh", "reason"),
    [
        (LEDGER, 6, 1_000_060, 50_010, RejectReason.NONE),
        (MeterLedger(False, 5, 1_000_000, 50_000), 6, 1_000_060, 50_010, RejectReason.METER_NOT_ACTIVE),
        (LEDGER, 2**32, 1_000_060, 50_010, RejectReason.OUT_OF_RANGE),
        (LEDGER, 6, 2**32, 50_010, RejectReason.OUT_OF_RANGE),
        (LEDGER, 6, 1_000_060, MAX_REGISTER_WH + 1, RejectReason.OUT_OF_RANGE),
        (LEDGER, 5, 1_000_060, 50_010, RejectReason.STALE_SEQUENCE),
        (LEDGER, 6, 1_000_000, 50_010, RejectReason.STALE_TIMESTAMP),
        (LEDGER, 6, 2_000_301, 50_010, RejectReason.FUTURE_TIMESTAMP),
        (LEDGER, 6, 2_000_300, 50_010, RejectReason.NONE),
        (LEDGER, 6, 1_000_060, 49_999, RejectReason.REGISTER_DECREASED),
        (LEDGER, 6, 1_000_360, 52_400, RejectReason.NONE),
        (LEDGER, 6, 1_000_360, 52_401, RejectReason.IMPLAUSIBLE_DELTA),
    ],
    ids=[
        "plausible", "inactive", "seq-over-32-bits", "timestamp-over-32-bits", "register-over-48-bits",
        "stale-seq", "stale-timestamp", "beyond-skew", "at-skew", "decreased", "at-max-power", "over-max-power",
    ],
)
def test_check_reading_gives_the_contract_reason(
    ledger: MeterLedger, seq: int, timestamp: int, energy_wh: int, reason: RejectReason
) -> None:
    assert check_reading(ledger, seq, timestamp, energy_wh, **LIMITS) is reason


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
    assert not overflows(MeterLedger(True, 1, 1, 1, 2**48 - 1, 2**48 - 1, 2**40 - 1))
    assert overflows(MeterLedger(True, 1, 1, 1, period_energy_cost=2**48))
    assert overflows(MeterLedger(True, 1, 1, 1, period_standing_charge=2**40))
    assert overflows(MeterLedger(True, 1, 1, 1, period_energy_wh=2**48))


@pytest.mark.parametrize(
    ("micropence", "text"),
    [
        (0, "£0.00"),
        (81_880_000, "£0.82"),
        (1_499_999, "£0.01"),
        (1_500_001, "£0.02"),
        (100_000_000, "£1.00"),
        (1_234_567_000_000, "£12,345.67"),
    ],
)
def test_format_pounds_rounds_to_the_penny_with_thousands_separators(micropence: int, text: str) -> None:
    assert format_pounds(micropence) == text
