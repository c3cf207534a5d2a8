"""Readings after long silences: the contract prices a gap of any length in closed form (``_accrueLong``)
at a bounded cost, to the micropence of ``common.tariff`` (which splits it half hour by half hour).

The property test schedules random tariff versions (flat, banded in GMT or UK clock time, day-ahead with
random published prices) over two months that hold a UK clock change, and has meters report after random
gaps of up to 40 days; every event and open bill must equal the reference. The fixed tests record a
reading after a 400-day silence and bound its gas. The chain's clock goes back after each (``evm_revert``).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from common.batches import LOOP_PERIODS, MAX_BATCH_GAS, extra_periods, gas_limit_for, pack_reading
from common.billing import Billing
from common.chain import ChainClient
from common.deployer import CLOCK_CHANGE_YEARS
from common.deployment import Deployment
from common.eip712 import ReadingData, sign_reading
from common.settings import Settings
from common.tariff import (
    BANDED,
    CLOCK_GMT,
    CLOCK_LOCAL,
    PERIOD_SECONDS,
    ClockTable,
    MeterLedger,
    PriceRule,
    Schedule,
    TariffVersion,
    accrue,
    standing_charge,
    uk_clock_changes,
)

DAY = 86_400
PEAK = [0 if 1 <= h < 11 else 2 if 32 <= h < 38 else 1 for h in range(48)]  # off-peak 00:30-05:30, peak 16-19
_keys = itertools.count()


def _utc(*args: int) -> int:
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp())


@pytest.fixture
def billing(chain: ChainClient, deployment: Deployment) -> Iterator[Billing]:
    """The contract on a chain whose clock and state go back after the test."""
    rpc = chain.w3.provider.make_request
    snap = rpc("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        yield Billing(chain, deployment)
    finally:
        rpc("evm_revert", [snap])  # type: ignore[arg-type]
        chain._nonces.clear()


def _move_to(billing: Billing, t: int) -> None:
    rpc = billing.client.w3.provider.make_request
    rpc("evm_increaseTime", [t - billing.now()])  # type: ignore[arg-type]
    rpc("evm_mine", [])  # type: ignore[arg-type]


def _schedule(billing: Billing) -> Schedule:
    return Schedule(billing.versions(), ClockTable(tuple(uk_clock_changes(*CLOCK_CHANGE_YEARS))))


def _recorded(ledger: MeterLedger) -> dict[str, Any]:
    return {"seq": ledger.last_seq, "timestamp": ledger.last_timestamp, "energyWh": ledger.last_energy_wh,
            "exportWh": ledger.last_export_wh, "periodImportCost": ledger.period_import_cost,
            "periodExportCredit": ledger.period_export_credit}


def _recorded_in(billing: Billing, receipt: Any) -> list[dict[str, Any]]:
    assert billing.events("ReadingRejected", receipt) == []
    return [{k: e["args"][k] for k in ("seq", "timestamp", "energyWh", "exportWh", "periodImportCost",
                                       "periodExportCredit")} for e in billing.events("ReadingRecorded", receipt)]


def _open_bill(billing: Billing, meter: str, opened: int, opening_wh: int, ledger: MeterLedger,
               schedule: Schedule) -> list[int]:
    standing = standing_charge(schedule.versions, opened, ledger.last_timestamp)
    return [1, opened, ledger.last_timestamp, ledger.last_energy_wh - opening_wh, ledger.last_export_wh,
            ledger.period_import_cost, ledger.period_export_credit, standing,
            ledger.period_import_cost + standing - ledger.period_export_credit]


# ---------------------------------------------------------------- property: any gap, any tariff

#: 00:00 UTC some weeks before the spring and autumn changes of 2027, and a winter day.
ANCHORS = [_utc(2027, 3, 1), _utc(2027, 10, 10), _utc(2027, 1, 5)]
prices = st.integers(0, 100_000)
rules = st.one_of(
    st.builds(PriceRule.flat, prices),
    st.builds(PriceRule.banded, st.lists(st.integers(0, 7), min_size=48, max_size=48),
              st.lists(prices, min_size=8, max_size=8)),
    st.builds(PriceRule.banded, st.just(PEAK), st.lists(prices, min_size=3, max_size=3)),
    st.builds(PriceRule.day_ahead, prices),
)
version_specs = st.tuples(rules, rules, st.sampled_from([CLOCK_GMT, CLOCK_LOCAL]), st.integers(0, 100_000),
                          st.integers(1, 40 * 48))
publications = st.lists(st.tuples(st.integers(0, 50 * 48), st.lists(prices, min_size=1, max_size=100),
                                  st.booleans()), max_size=3)
gaps = st.one_of(st.integers(1, 7_200), st.integers(2 * 3_600, 3 * DAY), st.integers(DAY, 40 * DAY))
meter_steps = st.lists(st.tuples(gaps, st.integers(0, 1_000), st.integers(0, 1_000)), min_size=1, max_size=5)


@settings(max_examples=8, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(anchor=st.sampled_from(ANCHORS), specs=st.lists(version_specs, min_size=1, max_size=3),
       published=publications, meters=st.lists(meter_steps, min_size=1, max_size=3))
def test_readings_after_long_gaps_are_billed_as_the_reference_bills_them_half_hour_by_half_hour(
    billing: Billing,
    base_settings: Settings,
    anchor: int,
    specs: list[tuple[PriceRule, PriceRule, int, int, int]],
    published: list[tuple[int, list[int], bool]],
    meters: list[list[tuple[int, int, int]]],
) -> None:
    rpc = billing.client.w3.provider.make_request
    snap = rpc("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        _move_to(billing, anchor - 3 * 3_600)
        schedule = _schedule(billing)
        start = anchor
        for import_rule, export_rule, clock, standing, gap in specs:
            if import_rule.kind != BANDED and import_rule.rate == 0:
                import_rule = PriceRule(import_rule.kind, 1, import_rule.bands, import_rule.band_rates)
            version = TariffVersion(start, standing, import_rule, export_rule, clock)
            billing.set_tariff(version)
            schedule.add_version(version)
            start += gap * PERIOD_SECONDS
        for skip, day_ahead, export_side in published:
            first = anchor + skip * PERIOD_SECONDS
            import_prices, export_prices = (day_ahead, day_ahead[::-1]) if export_side else (day_ahead, [])
            billing.publish_day_ahead(first, import_prices, export_prices)
            schedule.publish(first // PERIOD_SECONDS, import_prices, export_prices)
        _move_to(billing, anchor + 160 * DAY)

        opened = anchor - 6 * 3_600 + 7
        accounts = [Account.from_key(keccak(b"long-gap-meter-%d" % next(_keys))) for _ in meters]
        billing.register_meters([(a.address, b"\x03" * 32, "north", 5_000) for a in accounts], opened_at=opened)
        for account, steps in zip(accounts, meters, strict=True):
            ledger, signed, expected = MeterLedger(True, 0, opened, 5_000), [], []
            for elapsed, import_share, export_share in steps:
                watts = 3_000  # well inside the contract's plausibility limit, so a 40-day gap cannot overflow
                limit = watts * elapsed // 3_600
                reading = ReadingData(account.address, ledger.last_seq + 1, ledger.last_timestamp + elapsed,
                                      ledger.last_energy_wh + limit * import_share // 1_000,
                                      ledger.last_export_wh + limit * export_share // 1_000)
                ledger = accrue(ledger, reading.seq, reading.timestamp, reading.energy_wh, reading.export_wh, schedule)
                expected.append(_recorded(ledger))
                signed.append((reading, sign_reading(bytes(account.key), billing.deployment.domain, reading)))
            receipt = billing.submit_readings(signed)
            assert _recorded_in(billing, receipt) == expected
            assert billing.contract.functions.openBill(account.address).call() == _open_bill(
                billing, account.address, opened, 5_000, ledger, schedule)
    finally:
        rpc("evm_revert", [snap])  # type: ignore[arg-type]
        billing.client._nonces.clear()


# ---------------------------------------------------------------- a 400-day silence


def test_a_reading_after_a_400_day_silence_is_recorded_exactly_within_the_gateways_gas_bound(
    billing: Billing,
) -> None:
    skew = billing.settings.max_future_skew
    start = (billing.now() + skew) // PERIOD_SECONDS * PERIOD_SECONDS + 2 * PERIOD_SECONDS
    time_of_use = TariffVersion(start, 50_000, PriceRule.banded(PEAK, [8_500, 24_670, 35_000]),
                                PriceRule.day_ahead(4_000), CLOCK_LOCAL)
    flat = TariffVersion(start + 200 * DAY, 61_000, PriceRule.flat(27_000), PriceRule.flat(15_000))
    billing.set_tariff(time_of_use)
    billing.set_tariff(flat)
    billing.publish_day_ahead(start + 3 * DAY, [], [5_000 + 10 * i for i in range(100)])
    opened, silent_until = start + 1_000, start + 400 * DAY + 1_007
    _move_to(billing, silent_until + 60)
    schedule = _schedule(billing)
    schedule.publish((start + 3 * DAY) // PERIOD_SECONDS, [], [5_000 + 10 * i for i in range(100)])
    meter = Account.from_key(keccak(b"four-hundred-days"))
    billing.register_meters([(meter.address, b"\x04" * 32, "north", 7_000)], opened_at=opened)
    reading = ReadingData(meter.address, 1, silent_until, 7_000 + 3_456_789, 987_654)
    ledger = accrue(MeterLedger(True, 0, opened, 7_000), 1, reading.timestamp, reading.energy_wh, reading.export_wh,
                    schedule)
    bound = gas_limit_for(1, extra_periods([(opened, silent_until)]))
    call = billing.contract.functions.submitReadings(
        pack_reading(reading, sign_reading(bytes(meter.key), billing.deployment.domain, reading)))
    receipt = billing.client.transact(billing.settings.gateway_key, call, gas=bound)
    assert _recorded_in(billing, receipt) == [_recorded(ledger)]
    assert billing.contract.functions.openBill(meter.address).call() == _open_bill(
        billing, meter.address, opened, 7_000, ledger, schedule)
    print(f"gas of one reading after 400 days: {receipt['gasUsed']:,} (bound {bound:,})")
    assert receipt["gasUsed"] < 1_000_000  # was about 19,200 half hours x 3,700 gas: more than a block holds
    assert bound <= MAX_BATCH_GAS  # the gateway sends it (alone in its batch if need be)


def test_the_gateway_and_the_contract_agree_where_a_gap_is_priced_in_closed_form(billing: Billing) -> None:
    assert billing.contract.functions.LOOP_PERIODS().call() == LOOP_PERIODS
