"""SmartMeterBilling against a real Ganache: every external function, every reason a reading is
rejected, every role gate, each with the exact custom error or the exact events it produces."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from web3.exceptions import ContractPanicError

from common.batches import (
    GAS_PER_EXTRA_PERIOD,
    GAS_PER_GAP_PERIOD,
    LONG_GAP_GAS,
    extra_periods,
    gas_limit_for,
    pack_reading,
    submit_readings_calldata,
)
from common.billing import Billing, text32
from common.chain import ChainClient, ErrorDecoder
from common.deployment import Deployment
from common.eip712 import Domain, ReadingData, sign_reading
from common.errors import ChainError
from common.settings import Settings
from common.tariff import (
    CLOCK_LOCAL,
    PERIOD_SECONDS,
    USES_UP_SEQ,
    MeterLedger,
    PriceRule,
    RejectReason,
    Schedule,
    TariffVersion,
    accrue,
    split,
    standing_charge,
)

OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")
GATEWAY_ROLE = keccak(text="GATEWAY_ROLE")
GRID_OPERATOR_ROLE = keccak(text="GRID_OPERATOR_ROLE")
DEFAULT_ADMIN_ROLE = bytes(32)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_ORDER = SECP256K1_N // 2
PEAK = [0 if 1 <= h < 11 else 2 if 32 <= h < 38 else 1 for h in range(48)]  # off-peak 00:30-05:30, peak 16-19
ACCOUNT_REF = b"\x42" * 32
DAY = 86_400

EVENT_NAMES = (
    "MeterRegistered",
    "MeterDeactivated",
    "MeterReactivated",
    "MeterExchanged",
    "RegisterReset",
    "TariffChanged",
    "TariffWithdrawn",
    "DayAheadPricesPublished",
    "ClockChangeAdded",
    "ClockChangeWithdrawn",
    "ReadingRecorded",
    "ReadingRejected",
    "BillIssued",
    "GridAlert",
    "GridAlertCleared",
)
METER_EVENTS = (
    "MeterRegistered",
    "MeterDeactivated",
    "MeterReactivated",
    "RegisterReset",
    "ReadingRecorded",
    "ReadingRejected",
    "BillIssued",
)


# ---------------------------------------------------------------- helpers


@pytest.fixture
def billing(chain: ChainClient, deployment: Deployment, snapshot: None) -> Billing:
    """The contract through the session's client, on a chain reverted after the test."""
    return Billing(chain, deployment)


def chain_now(billing: Billing) -> int:
    """The latest block's timestamp."""
    return int(billing.client.w3.eth.get_block("latest")["timestamp"])


def revert_reason(err: BaseException, abi: list[dict[str, Any]]) -> str:
    """The decoded custom error behind a refused call or transaction, e.g. ``UnknownMeter(0xab..)``.

    Decoded with the project's ErrorDecoder, which renders addresses in lower case.
    """
    cause = err.__cause__ if isinstance(err, ChainError) and err.__cause__ is not None else err
    data = getattr(cause, "data", None)
    if isinstance(data, dict):
        data = data.get("result") or data.get("data")
    assert isinstance(data, str) and data.startswith("0x"), f"no revert data in {err!r}"
    return ErrorDecoder(abi).decode(data)


def refused(billing: Billing, send: Callable[[], Any]) -> str:
    """Run a transaction that must revert; return its decoded custom error."""
    with pytest.raises(ChainError) as excinfo:
        send()
    return revert_reason(excinfo.value, billing.deployment.abi)


def logged(billing: Billing, receipt: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every contract event in the receipt, in log order, as (name, args); a ``ReadingRecorded``'s
    packed record is given by its named fields."""
    found = []
    for name in EVENT_NAMES:
        for event in billing.events(name, receipt):
            args = dict(event["args"])
            args.pop("record", None)
            found.append((event["logIndex"], name, args))
    return [(name, args) for _, name, args in sorted(found, key=lambda item: item[0])]


def advance(billing: Billing, seconds: int) -> None:
    """Move the chain's clock forward (the snapshot fixture puts it back)."""
    billing.client.w3.provider.make_request("evm_increaseTime", [seconds])
    billing.client.w3.provider.make_request("evm_mine", [])


def next_boundary(billing: Billing, after: int = 0) -> int:
    """The first period boundary a tariff or price may start at (skew ahead of now), plus ``after``."""
    earliest = chain_now(billing) + billing.settings.max_future_skew + 15
    return -(-earliest // PERIOD_SECONDS) * PERIOD_SECONDS + after


def key_of(account: LocalAccount) -> bytes:
    return bytes(account.key)


def signed(
    meter: LocalAccount, domain: Domain, seq: int, timestamp: int, energy_wh: int, export_wh: int = 0
) -> tuple[ReadingData, str]:
    """A reading and its meter's signature."""
    reading = ReadingData(meter.address, seq, timestamp, energy_wh, export_wh)
    return reading, sign_reading(key_of(meter), domain, reading)


def send_raw(billing: Billing, batch: bytes) -> Any:
    """Submit a packed batch as it is (for records the encoder would refuse)."""
    call = billing.contract.functions.submitReadings(batch)
    return billing.client.transact(billing.settings.gateway_key, call)


def used_up(snapshot: tuple[Any, Any], seq: int | None) -> tuple[Any, Any]:
    """A meter's snapshot after a refusal for the reading's content used up ``seq`` (None: nothing changed)."""
    if seq is None:
        return snapshot
    state = list(snapshot[0])
    state[4] = seq
    return type(snapshot[0])(state) if not isinstance(snapshot[0], list) else state, snapshot[1]


def snapshot_of(billing: Billing, meter: str) -> tuple[Any, Any]:
    """Everything the contract holds for a meter (to show a rejection changed nothing)."""
    contract = billing.contract
    return contract.functions.meterState(meter).call(), contract.functions.openBill(meter).call()


def recorded(meter: str, ledger: MeterLedger) -> list[tuple[str, dict]]:
    """The one event a recorded reading emits, for the ledger after it."""
    return [
        (
            "ReadingRecorded",
            {
                "meter": meter, "seq": ledger.last_seq, "timestamp": ledger.last_timestamp,
                "energyWh": ledger.last_energy_wh, "exportWh": ledger.last_export_wh,
                "periodImportCost": ledger.period_import_cost, "periodExportCredit": ledger.period_export_credit,
            },
        )
    ]


def rejected(meter: str, seq: int, reason: RejectReason) -> tuple[str, dict]:
    return ("ReadingRejected", {"meter": meter, "seq": seq, "reason": int(reason)})


class OpenMeter:
    """A registered meter opened a day ago at 10,000 Wh, with one recorded reading (seq 1, +1 h,
    +1 kWh imported, 500 Wh exported)."""

    def __init__(self, billing: Billing) -> None:
        self.billing = billing
        self.account: LocalAccount = Account.create()
        self.address = self.account.address
        self.opened = chain_now(billing) - DAY
        billing.register_meter(self.address, ACCOUNT_REF, "north", 10_000, self.opened)
        self.ledger = MeterLedger(True, 0, self.opened, 10_000)
        self.submit(1, self.opened + 3_600, 11_000, 500)

    def sign(self, seq: int, timestamp: int, energy_wh: int, export_wh: int | None = None) -> tuple[ReadingData, str]:
        export = self.ledger.last_export_wh if export_wh is None else export_wh
        return signed(self.account, self.billing.deployment.domain, seq, timestamp, energy_wh, export)

    def submit(self, seq: int, timestamp: int, energy_wh: int, export_wh: int | None = None) -> Any:
        export = self.ledger.last_export_wh if export_wh is None else export_wh
        receipt = self.billing.submit_readings([self.sign(seq, timestamp, energy_wh, export)])
        if logged(self.billing, receipt)[0][0] == "ReadingRecorded":
            self.ledger = accrue(self.ledger, seq, timestamp, energy_wh, export, self.billing.schedule())
        return receipt


@pytest.fixture
def meter(billing: Billing) -> OpenMeter:
    return OpenMeter(billing)


# ---------------------------------------------------------------- ABI


def test_contract_emits_exactly_the_documented_events(deployment: Deployment) -> None:
    names = {item["name"] for item in deployment.abi if item["type"] == "event"}
    assert names == set(EVENT_NAMES) | {"RoleAdminChanged", "RoleGranted", "RoleRevoked", "EIP712DomainChanged"}


@pytest.mark.parametrize("name", METER_EVENTS)
def test_every_meter_event_has_the_meter_as_first_indexed_argument(deployment: Deployment, name: str) -> None:
    (event,) = [item for item in deployment.abi if item["type"] == "event" and item["name"] == name]
    indexed = [i for i in event["inputs"] if i["indexed"]]
    assert event["inputs"][0] == {"name": "meter", "type": "address", "indexed": True, "internalType": "address"}
    assert indexed == [event["inputs"][0]]


# ---------------------------------------------------------------- registerMeter


def test_register_meter_records_the_meter_and_emits_meter_registered(billing: Billing) -> None:
    meter = Account.create().address
    opened = chain_now(billing) - 7 * DAY
    count_before = billing.contract.functions.meterCount().call()
    receipt = billing.register_meter(meter, ACCOUNT_REF, "south-east", 123_456, opened)
    assert logged(billing, receipt) == [
        (
            "MeterRegistered",
            {
                "meter": meter,
                "accountRef": ACCOUNT_REF,
                "region": text32("south-east"),
                "openingWh": 123_456,
                "openedAt": opened,
            },
        )
    ]
    assert billing.contract.functions.meterState(meter).call() == [
        True, True, ACCOUNT_REF, text32("south-east"), 0, opened, 123_456, 0
    ]
    assert billing.contract.functions.meterCount().call() == count_before + 1
    assert billing.contract.functions.meterAt(count_before).call() == meter
    assert billing.contract.functions.openBill(meter).call() == [1, opened, opened, 0, 0, 0, 0, 0, 0]


def test_register_meter_with_opened_at_zero_opens_it_at_the_block_time(billing: Billing) -> None:
    meter = Account.create().address
    receipt = billing.register_meter(meter, ACCOUNT_REF, "north", 5, 0)
    block_time = billing.client.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    (event,) = billing.events("MeterRegistered", receipt)
    assert event.args.openedAt == block_time
    assert billing.meter(meter).last_timestamp == block_time
    assert billing.bill(meter).period_start == block_time


def test_register_meter_opened_in_the_future_reverts_with_opening_in_future(billing: Billing) -> None:
    opened = chain_now(billing) + 3_600
    reason = refused(billing, lambda: billing.register_meter(Account.create().address, ACCOUNT_REF, "n", 0, opened))
    match = re.fullmatch(r"OpeningInFuture\((\d+), (\d+)\)", reason)
    assert match is not None, reason
    assert int(match[1]) == opened
    assert opened - 3_600 <= int(match[2]) < opened


def test_registering_a_meter_twice_reverts_with_meter_already_registered(meter: OpenMeter) -> None:
    billing = meter.billing
    reason = refused(billing, lambda: billing.register_meter(meter.address, ACCOUNT_REF, "n", 0, 0))
    assert reason == f"MeterAlreadyRegistered({meter.address.lower()})"


def test_registering_the_zero_address_reverts_with_zero_address(billing: Billing) -> None:
    zero = "0x" + "00" * 20
    assert refused(billing, lambda: billing.register_meter(zero, ACCOUNT_REF, "n", 0, 0)) == "ZeroAddress()"


def test_registering_an_opening_register_above_48_bits_reverts_with_value_too_large(billing: Billing) -> None:
    reason = refused(billing, lambda: billing.register_meter(Account.create().address, ACCOUNT_REF, "n", 2**48, 0))
    assert reason == f"ValueTooLarge({2**48}, {2**48 - 1})"


# ---------------------------------------------------------------- deactivate / reactivate


def test_deactivate_meter_emits_meter_deactivated_and_marks_it_inactive(meter: OpenMeter) -> None:
    receipt = meter.billing.deactivate_meter(meter.address)
    assert logged(meter.billing, receipt) == [("MeterDeactivated", {"meter": meter.address})]
    assert meter.billing.meter(meter.address).active is False
    assert meter.billing.meter(meter.address).registered is True


def test_deactivating_an_inactive_meter_reverts_with_meter_not_active(meter: OpenMeter) -> None:
    meter.billing.deactivate_meter(meter.address)
    reason = refused(meter.billing, lambda: meter.billing.deactivate_meter(meter.address))
    assert reason == f"MeterNotActive({meter.address.lower()})"


def test_reactivate_meter_emits_meter_reactivated_and_readings_are_accepted_again(meter: OpenMeter) -> None:
    billing = meter.billing
    billing.deactivate_meter(meter.address)
    receipt = billing.reactivate_meter(meter.address)
    assert logged(billing, receipt) == [("MeterReactivated", {"meter": meter.address})]
    assert billing.meter(meter.address).active is True
    receipt = meter.submit(2, meter.opened + 7_200, 11_500)
    assert logged(billing, receipt) == recorded(meter.address, meter.ledger)


def test_reactivating_an_active_meter_reverts_with_meter_already_active(meter: OpenMeter) -> None:
    reason = refused(meter.billing, lambda: meter.billing.reactivate_meter(meter.address))
    assert reason == f"MeterAlreadyActive({meter.address.lower()})"


@pytest.mark.parametrize("operation", ["deactivate_meter", "reactivate_meter", "close_billing_period"])
def test_operations_on_an_unregistered_meter_revert_with_unknown_meter(billing: Billing, operation: str) -> None:
    stranger = Account.create().address
    reason = refused(billing, lambda: getattr(billing, operation)(stranger))
    assert reason == f"UnknownMeter({stranger.lower()})"


# ---------------------------------------------------------------- setTariff


def test_deployed_tariff_is_version_one_flat_from_time_zero_with_the_configured_rates(
    billing: Billing, base_settings: Settings
) -> None:
    fn = billing.contract.functions
    assert fn.tariffCount().call() == 1
    version = TariffVersion.from_struct(fn.tariffVersion(1).call())
    assert version == TariffVersion.flat(base_settings.tariff_unit_rate, base_settings.tariff_standing_charge, 0,
                                         base_settings.tariff_export_rate)
    assert fn.tariffVersionAt(0).call() == 1
    assert fn.pricesAt(chain_now(billing)).call() == [base_settings.tariff_unit_rate, base_settings.tariff_export_rate]


def test_set_tariff_with_effective_from_zero_starts_at_the_first_boundary_beyond_the_skew(billing: Billing) -> None:
    version = TariffVersion(0, 60_000, PriceRule.banded(PEAK, [8_500, 24_670, 35_000]), PriceRule.flat(15_000),
                            CLOCK_LOCAL)
    receipt = billing.set_tariff(version)
    block_time = billing.client.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    start = -(-(block_time + billing.settings.max_future_skew) // PERIOD_SECONDS) * PERIOD_SECONDS
    (event,) = billing.events("TariffChanged", receipt)
    assert event.args.version == 2
    assert TariffVersion.from_event(event.args) == TariffVersion(
        start, 60_000, version.import_rule, version.export_rule, CLOCK_LOCAL)
    assert TariffVersion.from_struct(billing.contract.functions.tariffVersion(2).call()).effective_from == start
    assert billing.contract.functions.tariffVersionAt(start - 1).call() == 1
    assert billing.contract.functions.tariffVersionAt(start).call() == 2


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda b, v: TariffVersion.flat(0, 5, next_boundary(b)), "InvalidTariff(0, 5)"),
        (lambda b, v: TariffVersion.flat(1, 1, next_boundary(b) + 60), "NotPeriodBoundary({t})"),
        (lambda b, v: TariffVersion.flat(1, 1, next_boundary(b) - 2 * PERIOD_SECONDS), "TooSoon({t}, *)"),
        (lambda b, v: TariffVersion(next_boundary(b), 1, PriceRule.flat(1), PriceRule.flat(0), 2), "InvalidClock(2)"),
    ],
    ids=["zero-flat-rate", "not-a-boundary", "too-soon", "bad-clock"],
)
def test_set_tariff_refuses_a_version_that_could_misprice(billing: Billing, change: Any, error: str) -> None:
    version = change(billing, None)
    reason = refused(billing, lambda: billing.set_tariff(version))
    pattern = re.escape(error.format(t=version.effective_from)).replace(r"\*", r"\d+")
    assert re.fullmatch(pattern, reason), reason


def test_set_tariff_refuses_a_price_kind_and_a_band_table_out_of_range(billing: Billing) -> None:
    good = TariffVersion.flat(1, 1, next_boundary(billing))
    call = billing.contract.functions.setTariff((good.effective_from, 1, 0, 3, 1, 0, 0, 0, 0, 0, 0))
    assert refused(billing, lambda: billing.client.transact(billing.settings.operator_key, call)) == \
        "InvalidPriceKind(3)"
    call = billing.contract.functions.setTariff((good.effective_from, 1, 0, 1, 1, 0, 0, 1 << 144, 0, 0, 0))
    assert refused(billing, lambda: billing.client.transact(billing.settings.operator_key, call)) == \
        f"InvalidBandTable({1 << 144})"


def test_a_version_must_start_after_the_last_one(billing: Billing) -> None:
    later = next_boundary(billing, 4 * PERIOD_SECONDS)
    billing.set_tariff(TariffVersion.flat(30_000, 1, later))
    reason = refused(billing, lambda: billing.set_tariff(TariffVersion.flat(30_000, 1, later - PERIOD_SECONDS)))
    assert reason == f"NotAfterLastVersion({later - PERIOD_SECONDS}, {later})"


def test_a_new_tariff_never_reprices_consumption_before_it_took_effect(meter: OpenMeter) -> None:
    billing = meter.billing
    start = next_boundary(billing)
    new = TariffVersion(start, 90_000, PriceRule.banded(PEAK, [8_500, 24_670, 35_000]),
                        PriceRule.banded(PEAK, [1_000, 5_000, 30_000]), CLOCK_LOCAL)
    billing.set_tariff(new)
    t = chain_now(billing) - 5  # a reading just before the change, priced wholly at version 1
    meter.submit(2, t, 11_500, 600)
    before = billing.bill(meter.address)
    advance(billing, start + 1_200 - chain_now(billing))
    receipt = meter.submit(3, start + 1_200, 12_100, 900)  # spans the change
    assert logged(billing, receipt) == recorded(meter.address, meter.ledger)
    schedule = billing.schedule()
    old, old_export = billing.settings.tariff_unit_rate, billing.settings.tariff_export_rate
    new_in, new_out = schedule.prices(start // PERIOD_SECONDS)
    imports, exports = split(t, start + 1_200, 600), split(t, start + 1_200, 300)
    assert meter.ledger.period_import_cost - before.energy_cost == sum(
        wh * (old if p * PERIOD_SECONDS < start else new_in) for p, wh in imports)
    assert meter.ledger.period_export_credit - before.export_credit == sum(
        wh * (old_export if p * PERIOD_SECONDS < start else new_out) for p, wh in exports)
    assert sum(wh for p, wh in imports if p * PERIOD_SECONDS >= start) == 600 - 600 * (start - t) // (start + 1_200 - t)
    bill = billing.bill(meter.address)
    assert bill.standing_charge == standing_charge(schedule.versions, meter.opened, start + 1_200)
    assert bill.standing_charge == ((start - meter.opened) * billing.settings.tariff_standing_charge
                                    + 1_200 * 90_000) * 1_000 // DAY
    assert bill.amount_due == meter.ledger.period_import_cost + bill.standing_charge - meter.ledger.period_export_credit


# ---------------------------------------------------------------- day-ahead prices and clock changes


def test_day_ahead_prices_price_their_periods_and_the_fallback_the_rest(meter: OpenMeter) -> None:
    billing = meter.billing
    start = next_boundary(billing)
    billing.set_tariff(TariffVersion(start, 50_000, PriceRule.day_ahead(20_000), PriceRule.day_ahead(4_000)))
    receipt = billing.publish_day_ahead(start, [31_000, 0], [7_000, 7_500])
    assert logged(billing, receipt) == [
        ("DayAheadPricesPublished", {"from": start, "importPrices": [31_000, 0], "exportPrices": [7_000, 7_500]})
    ]
    fn = billing.contract.functions
    assert fn.pricesAt(start).call() == [31_000, 7_000]
    assert fn.pricesAt(start + PERIOD_SECONDS + 5).call() == [0, 7_500]  # a published zero is a price
    assert fn.pricesAt(start + 2 * PERIOD_SECONDS).call() == [20_000, 4_000]  # not published: the fallback


@pytest.mark.parametrize(
    ("imports", "exports", "error"),
    [([], [], "BadPriceCount(0, 0)"), ([1, 2], [3], "BadPriceCount(2, 1)"), ([1] * 101, [], "BadPriceCount(101, 0)")],
)
def test_publishing_day_ahead_prices_refuses_bad_counts(
    billing: Billing, imports: list[int], exports: list[int], error: str
) -> None:
    assert refused(billing, lambda: billing.publish_day_ahead(next_boundary(billing), imports, exports)) == error


def test_publishing_day_ahead_prices_for_a_period_readings_may_already_cover_is_refused(billing: Billing) -> None:
    soon = next_boundary(billing) - PERIOD_SECONDS
    assert re.fullmatch(rf"TooSoon\({soon}, \d+\)", refused(billing, lambda: billing.publish_day_ahead(soon, [1])))
    assert refused(billing, lambda: billing.publish_day_ahead(soon + PERIOD_SECONDS + 1, [1])) == \
        f"NotPeriodBoundary({soon + PERIOD_SECONDS + 1})"


def test_the_published_uk_clock_gives_bst_in_summer_and_gmt_in_winter(billing: Billing) -> None:
    fn = billing.contract.functions
    spring, autumn = 1_774_746_000, 1_792_890_000  # 2026-03-29 01:00 UTC, 2026-10-25 01:00 UTC
    assert [fn.clockOffsetAt(t).call() for t in (spring - 1, spring, autumn - 1, autumn)] == [0, 60, 60, 0]
    assert fn.clockOffsetAt(946_684_800 - DAY).call() == 0  # before the first change published


def test_clock_changes_are_appended_in_order_and_only_ahead(billing: Billing) -> None:
    far = 2_900_000_000  # beyond the deployer's last change (2060)
    receipt = billing.client.transact(billing.settings.operator_key,
                                      billing.contract.functions.addClockChanges([(far, 60), (far + 200 * DAY, 0)]))
    assert logged(billing, receipt) == [("ClockChangeAdded", {"at": far, "offsetMinutes": 60}),
                                        ("ClockChangeAdded", {"at": far + 200 * DAY, "offsetMinutes": 0})]
    assert billing.contract.functions.clockOffsetAt(far + DAY).call() == 60
    call = billing.contract.functions.addClockChanges([(far, 0)])
    key = billing.settings.operator_key
    assert refused(billing, lambda: billing.client.transact(key, call)) == \
        f"ClockChangeOutOfOrder({far}, {far + 200 * DAY})"
    call = billing.contract.functions.addClockChanges([(far + 400 * DAY, 45)])
    assert refused(billing, lambda: billing.client.transact(key, call)) == "InvalidClockOffset(45)"


def test_clock_time_bands_follow_the_clock_and_gmt_bands_do_not(billing: Billing) -> None:
    """Peak 16:00-19:00 local is 15:00-18:00 UTC in summer; a GMT table keeps its UTC hours all year."""
    schedule = billing.schedule()
    summer = 1_782_000_000 // DAY * DAY  # a day in July 2026, 00:00 UTC
    local = TariffVersion(0, 1, PriceRule.banded(PEAK, [8_500, 24_670, 35_000]), clock=CLOCK_LOCAL)
    gmt = TariffVersion(0, 1, PriceRule.banded(PEAK, [8_500, 24_670, 35_000]))
    for version, peak_utc_hour in ((local, 15), (gmt, 16)):
        s = Schedule([version], schedule.clock)
        assert s.prices((summer + peak_utc_hour * 3_600) // PERIOD_SECONDS)[0] == 35_000
        assert s.prices((summer + (peak_utc_hour - 1) * 3_600) // PERIOD_SECONDS)[0] == 24_670


# ---------------------------------------------------------------- submitReadings


def test_signed_reading_is_recorded_with_one_reading_recorded_event(billing: Billing) -> None:
    account = Account.create()
    opened = chain_now(billing) - DAY
    billing.register_meter(account.address, ACCOUNT_REF, "north", 1_000, opened)
    receipt = billing.submit_readings([signed(account, billing.deployment.domain, 1, opened + 1_800, 1_500, 40)])
    ledger = accrue(MeterLedger(True, 0, opened, 1_000), 1, opened + 1_800, 1_500, 40, billing.schedule())
    assert logged(billing, receipt) == recorded(account.address, ledger)
    assert billing.contract.functions.meterState(account.address).call() == [
        True, True, ACCOUNT_REF, text32("north"), 1, opened + 1_800, 1_500, 40
    ]
    standing = standing_charge(billing.schedule().versions, opened, opened + 1_800)
    assert billing.contract.functions.openBill(account.address).call() == [
        1, opened, opened + 1_800, 500, 40, ledger.period_import_cost, ledger.period_export_credit, standing,
        ledger.period_import_cost + standing - ledger.period_export_credit,
    ]


def test_several_readings_of_one_meter_in_one_batch_are_checked_in_order(meter: OpenMeter) -> None:
    billing = meter.billing
    t = meter.opened
    receipt = billing.submit_readings([meter.sign(2, t + 4_000, 11_100), meter.sign(3, t + 5_000, 11_300, 510)])
    schedule = billing.schedule()
    second = accrue(meter.ledger, 2, t + 4_000, 11_100, 500, schedule)
    third = accrue(second, 3, t + 5_000, 11_300, 510, schedule)
    assert logged(billing, receipt) == [*recorded(meter.address, second), *recorded(meter.address, third)]


def test_reading_at_exactly_the_maximum_plausible_power_is_recorded(meter: OpenMeter, base_settings: Settings) -> None:
    elapsed = 360
    limit = base_settings.max_power_w * elapsed // 3_600
    last = meter.ledger
    receipt = meter.submit(2, last.last_timestamp + elapsed, last.last_energy_wh + limit, last.last_export_wh + limit)
    assert [name for name, _ in logged(meter.billing, receipt)] == ["ReadingRecorded"]


def test_mixed_batch_records_the_good_readings_and_rejects_the_bad_ones_without_reverting(meter: OpenMeter) -> None:
    billing = meter.billing
    other = Account.create()
    billing.register_meter(other.address, ACCOUNT_REF, "south", 0, meter.opened)
    domain = billing.deployment.domain
    t = meter.opened
    forged = (ReadingData(other.address, 1, t + 60, 10), signed(meter.account, domain, 1, t + 60, 10)[1])
    batch = [
        meter.sign(2, t + 4_000, 11_100),
        forged,
        meter.sign(2, t + 4_100, 11_200),
        signed(other, domain, 1, t + 60, 10),
        meter.sign(3, t + 4_200, 11_000),
        meter.sign(3, t + 4_300, 11_400),
        meter.sign(5, t + 4_300, 11_400),
        meter.sign(4, t + 4_300, 11_400),
    ]
    receipt = billing.submit_readings(batch)
    schedule = billing.schedule()
    m2 = accrue(meter.ledger, 2, t + 4_000, 11_100, 500, schedule)
    o1 = accrue(MeterLedger(True, 0, t, 0), 1, t + 60, 10, 0, schedule)
    m3 = accrue(m2, 4, t + 4_300, 11_400, 500, schedule)
    assert receipt["status"] == 1
    assert logged(billing, receipt) == [
        *recorded(meter.address, m2),
        rejected(other.address, 1, RejectReason.BAD_SIGNATURE),
        rejected(meter.address, 2, RejectReason.STALE_SEQUENCE),
        *recorded(other.address, o1),
        rejected(meter.address, 3, RejectReason.REGISTER_DECREASED),  # uses seq 3 up
        rejected(meter.address, 3, RejectReason.STALE_SEQUENCE),
        rejected(meter.address, 5, RejectReason.SEQUENCE_GAP),
        *recorded(meter.address, m3),
    ]
    assert billing.bill(meter.address).energy_cost == m3.period_import_cost
    assert billing.bill(other.address).energy_cost == o1.period_import_cost


def test_batch_that_is_not_whole_records_reverts_with_bad_batch_length(meter: OpenMeter) -> None:
    record = pack_reading(*meter.sign(2, meter.opened + 4_000, 11_100))
    assert refused(meter.billing, lambda: send_raw(meter.billing, record + record[:50])) == "BadBatchLength(154)"


def test_empty_batch_reverts_with_bad_batch_size(billing: Billing) -> None:
    assert refused(billing, lambda: billing.submit_readings([])) == "BadBatchSize(0, 250)"


def test_batch_above_max_batch_reverts_with_bad_batch_size(meter: OpenMeter) -> None:
    billing = meter.billing
    assert billing.contract.functions.MAX_BATCH().call() == 250
    one = pack_reading(*meter.sign(2, meter.opened + 4_000, 11_100))
    assert refused(billing, lambda: send_raw(billing, one * 251)) == "BadBatchSize(251, 250)"


def test_submit_readings_calldata_is_the_packed_batch_the_contract_decodes(meter: OpenMeter) -> None:
    pair = meter.sign(2, meter.opened + 4_000, 11_100, 777)
    data = submit_readings_calldata([pair])
    assert data[:4] == bytes.fromhex(billing_selector(meter.billing, "submitReadings")[2:])
    assert len(data) == 4 + 32 + 32 + 128  # offset, length, one 104-byte record padded to 128
    receipt = meter.billing.client.transact(
        meter.billing.settings.gateway_key, meter.billing.contract.functions.submitReadings(data[68:68 + 104]))
    assert [a["exportWh"] for _, a in logged(meter.billing, receipt)] == [777]


def billing_selector(billing: Billing, name: str) -> str:
    """The 4-byte selector of a contract function, from the ABI."""
    from eth_utils import function_abi_to_4byte_selector

    (fn,) = [i for i in billing.deployment.abi if i.get("type") == "function" and i["name"] == name]
    return "0x" + function_abi_to_4byte_selector(fn).hex()


@pytest.mark.parametrize(
    ("seq", "timestamp", "energy", "export"),
    [(2**32, 1, 1, 0), (1, 2**32, 1, 0), (1, 1, 2**48, 0), (1, 1, 1, 2**48)],
    ids=["seq-over-32-bits", "timestamp-over-32-bits", "import-over-48-bits", "export-over-48-bits"],
)
def test_the_packed_batch_cannot_carry_values_out_of_range(seq: int, timestamp: int, energy: int, export: int) -> None:
    account = Account.create()
    reading = ReadingData(account.address, seq, timestamp, energy, export)
    with pytest.raises(ValueError):
        pack_reading(reading, sign_reading(key_of(account), Domain(1337, account.address), reading))


# ---------------------------------------------------------------- every ReadingRejected reason


def _bad_reading(meter: OpenMeter, case: str, max_power_w: int) -> bytes:
    """The packed record of a reading of ``meter`` that fails in the way ``case`` names (state: seq 1
    at opened + 1 h, 11,000 Wh imported, 500 Wh exported)."""
    last = meter.ledger
    t, wh, ex = last.last_timestamp, last.last_energy_wh, last.last_export_wh
    stranger = Account.create()
    domain = meter.billing.deployment.domain
    if case == "signed by another key":
        reading = ReadingData(meter.address, 2, t + 60, wh + 10, ex)
        return pack_reading(reading, sign_reading(key_of(stranger), domain, reading))
    if case == "signature of another reading":
        return pack_reading(ReadingData(meter.address, 2, t + 60, wh + 11, ex), meter.sign(2, t + 60, wh + 10)[1])
    if case == "signature of another export register":
        return pack_reading(ReadingData(meter.address, 2, t + 60, wh + 10, ex + 1), meter.sign(2, t + 60, wh + 10)[1])
    if case == "signed for another verifying contract":
        return pack_reading(*signed(meter.account, Domain(domain.chain_id, stranger.address), 2, t + 60, wh + 10, ex))
    if case == "signed for another chain id":
        return pack_reading(*signed(meter.account, Domain(1, domain.verifying_contract), 2, t + 60, wh + 10, ex))
    if case == "high-s signature":
        record = pack_reading(*meter.sign(2, t + 60, wh + 10))
        parity = record[72] & 0x80
        return record[:72] + ((parity << 248) | (HALF_ORDER + 1)).to_bytes(32, "big")
    if case == "wrong parity":
        record = pack_reading(*meter.sign(2, t + 60, wh + 10))
        return record[:72] + bytes([record[72] ^ 0x80]) + record[73:]
    if case == "unknown meter":
        return pack_reading(*signed(stranger, domain, 1, t + 60, 10))
    if case == "stale sequence":
        return pack_reading(*meter.sign(1, t + 60, wh + 10))
    if case == "equal timestamp":
        return pack_reading(*meter.sign(2, t, wh))
    if case == "earlier timestamp":
        return pack_reading(*meter.sign(2, t - 1, wh))
    if case == "future timestamp":
        return pack_reading(*meter.sign(2, chain_now(meter.billing) + 3_600, wh + 10))
    if case == "register decreased":
        return pack_reading(*meter.sign(2, t + 60, wh - 1))
    if case == "export register decreased":
        return pack_reading(*meter.sign(2, t + 60, wh + 1, ex - 1))
    if case == "implausible delta":
        return pack_reading(*meter.sign(2, t + 360, wh + max_power_w * 360 // 3_600 + 1))
    if case == "implausible export":
        return pack_reading(*meter.sign(2, t + 360, wh, ex + max_power_w * 360 // 3_600 + 1))
    raise AssertionError(case)


REJECTIONS = [
    ("signed by another key", RejectReason.BAD_SIGNATURE),
    ("signature of another reading", RejectReason.BAD_SIGNATURE),
    ("signature of another export register", RejectReason.BAD_SIGNATURE),
    ("signed for another verifying contract", RejectReason.BAD_SIGNATURE),
    ("signed for another chain id", RejectReason.BAD_SIGNATURE),
    ("high-s signature", RejectReason.BAD_SIGNATURE),
    ("wrong parity", RejectReason.BAD_SIGNATURE),
    ("unknown meter", RejectReason.METER_NOT_ACTIVE),
    ("stale sequence", RejectReason.STALE_SEQUENCE),
    ("equal timestamp", RejectReason.STALE_TIMESTAMP),
    ("earlier timestamp", RejectReason.STALE_TIMESTAMP),
    ("future timestamp", RejectReason.FUTURE_TIMESTAMP),
    ("register decreased", RejectReason.REGISTER_DECREASED),
    ("export register decreased", RejectReason.REGISTER_DECREASED),
    ("implausible delta", RejectReason.IMPLAUSIBLE_DELTA),
    ("implausible export", RejectReason.IMPLAUSIBLE_DELTA),
]


@pytest.mark.parametrize(("case", "reason"), REJECTIONS, ids=[case for case, _ in REJECTIONS])
def test_bad_reading_is_rejected_with_its_reason_and_changes_nothing(
    meter: OpenMeter, base_settings: Settings, case: str, reason: RejectReason
) -> None:
    billing = meter.billing
    record = _bad_reading(meter, case, base_settings.max_power_w)
    before = snapshot_of(billing, meter.address)
    receipt = send_raw(billing, record)
    meter_address = "0x" + record[:20].hex()
    seq = int.from_bytes(record[20:24], "big")
    ((name, args),) = logged(billing, receipt)
    assert (name, args["meter"].lower(), args["seq"], args["reason"]) == (
        "ReadingRejected", meter_address, seq, int(reason))
    assert snapshot_of(billing, meter.address) == used_up(before, seq if reason in USES_UP_SEQ else None)


def test_reading_of_a_deactivated_meter_is_rejected_as_meter_not_active(meter: OpenMeter) -> None:
    billing = meter.billing
    billing.deactivate_meter(meter.address)
    before = snapshot_of(billing, meter.address)
    receipt = billing.submit_readings([meter.sign(2, meter.opened + 4_000, 11_100)])
    assert logged(billing, receipt) == [rejected(meter.address, 2, RejectReason.METER_NOT_ACTIVE)]
    assert snapshot_of(billing, meter.address) == before


def test_reading_that_would_overflow_the_open_period_is_rejected_as_period_overflow(meter: OpenMeter) -> None:
    billing = meter.billing
    start = next_boundary(billing)
    billing.set_tariff(TariffVersion.flat(2**32 - 2, 0, start))
    advance(billing, start + 3 * 3_600 - chain_now(billing))
    # 70,000 Wh at 2^32-2 millipence/kWh is 3.0e14 micropence, above the 48-bit import-cost field.
    t = start + 70_000 * 3_600 // 24_000 + 1
    meter.submit(2, start, meter.ledger.last_energy_wh)
    before = snapshot_of(billing, meter.address)
    receipt = billing.submit_readings([meter.sign(2 + 1, t, meter.ledger.last_energy_wh + 70_000)])
    assert logged(billing, receipt) == [rejected(meter.address, 3, RejectReason.PERIOD_OVERFLOW)]
    assert snapshot_of(billing, meter.address) == used_up(before, 3)


def test_a_reading_whose_predecessor_is_missing_is_refused_so_a_withheld_one_cannot_move_energy_between_bands(
        billing: Billing) -> None:
    # The review's proof: on a time-of-use tariff, withholding a signed off-peak reading made the next one carry
    # its energy into dearer bands. Now the next one is refused until its predecessor is in.
    start = next_boundary(billing)
    billing.set_tariff(TariffVersion(start, 50_000, PriceRule.banded(PEAK, [5_000, 25_000, 60_000])))
    advance(billing, start + 4 * DAY - chain_now(billing))
    account = Account.create()
    opened = chain_now(billing) - 3 * DAY
    billing.register_meter(account.address, ACCOUNT_REF, "north", 10_000, opened)
    midnight = (opened // DAY + 1) * DAY
    domain = billing.deployment.domain
    first, second, third = (signed(account, domain, seq, midnight + hours * 3_600, wh)
                            for seq, hours, wh in ((1, 1, 10_100), (2, 5, 14_100), (3, 18, 15_100)))
    billing.submit_readings([first])
    before = snapshot_of(billing, account.address)
    receipt = billing.submit_readings([third])
    assert logged(billing, receipt) == [rejected(account.address, 3, RejectReason.SEQUENCE_GAP)]
    assert snapshot_of(billing, account.address) == before, "a refusal for a missing predecessor changed the meter"
    receipt = billing.submit_readings([second, third])
    assert [name for name, _ in logged(billing, receipt)] == ["ReadingRecorded", "ReadingRecorded"]
    schedule = billing.schedule()
    after_first = accrue(MeterLedger(True, 0, opened, 10_000), 1, midnight + 3_600, 10_100, 0, schedule)
    (r2, _), (r3, _) = second, third
    honest = accrue(accrue(after_first, 2, r2.timestamp, r2.energy_wh, 0, schedule),
                    3, r3.timestamp, r3.energy_wh, 0, schedule)
    withheld = accrue(after_first, 3, r3.timestamp, r3.energy_wh, 0, schedule)
    assert withheld.period_import_cost > honest.period_import_cost  # what withholding would have gained
    assert billing.bill(account.address).energy_cost == honest.period_import_cost


def test_a_reading_refused_for_its_content_uses_up_its_seq_and_its_energy_is_billed_with_the_next(
        meter: OpenMeter) -> None:
    billing = meter.billing
    last = meter.ledger
    implausible = meter.sign(2, last.last_timestamp + 60, last.last_energy_wh + 10_000)
    receipt = billing.submit_readings([implausible])
    assert logged(billing, receipt) == [rejected(meter.address, 2, RejectReason.IMPLAUSIBLE_DELTA)]
    assert billing.contract.functions.meterState(meter.address).call()[4] == 2
    # Resubmitting it is now stale, and a forged seq 3 does not use the seq up.
    assert logged(billing, billing.submit_readings([implausible])) == [
        rejected(meter.address, 2, RejectReason.STALE_SEQUENCE)]
    stranger = Account.create()
    forged = ReadingData(meter.address, 3, last.last_timestamp + 7_200, last.last_energy_wh + 100, 500)
    receipt = billing.submit_readings([(forged, sign_reading(key_of(stranger), billing.deployment.domain, forged))])
    assert logged(billing, receipt) == [rejected(meter.address, 3, RejectReason.BAD_SIGNATURE)]
    assert billing.contract.functions.meterState(meter.address).call()[4] == 2
    # The next reading spans from the last recorded one: its delta holds the refused interval's energy too.
    receipt = meter.submit(3, last.last_timestamp + 7_200, last.last_energy_wh + 1_500)
    assert logged(billing, receipt) == recorded(meter.address, meter.ledger)
    assert meter.ledger.last_seq == 3 and meter.ledger.last_energy_wh == last.last_energy_wh + 1_500


# ---------------------------------------------------------------- closeBillingPeriod


def test_close_billing_period_issues_the_bill_and_opens_a_period_at_zero(meter: OpenMeter) -> None:
    billing = meter.billing
    t = meter.opened
    meter.submit(2, t + 7_200, 11_800, 2_600)
    issued = meter.ledger
    schedule = billing.schedule()
    standing = standing_charge(schedule.versions, t, t + 7_200)
    receipt = billing.close_billing_period(meter.address)
    assert logged(billing, receipt) == [
        (
            "BillIssued",
            {
                "meter": meter.address,
                "periodId": 1,
                "periodStart": t,
                "periodEnd": t + 7_200,
                "importWh": 1_800,
                "exportWh": 2_600,
                "importCost": issued.period_import_cost,
                "exportCredit": issued.period_export_credit,
                "standingCharge": standing,
                "amountDue": issued.period_import_cost + standing - issued.period_export_credit,
            },
        )
    ]
    assert issued.period_import_cost == 1_800 * billing.settings.tariff_unit_rate
    assert billing.contract.functions.openBill(meter.address).call() == [2, t + 7_200, t + 7_200, 0, 0, 0, 0, 0, 0]
    assert billing.meter(meter.address).last_energy_wh == 11_800

    receipt = meter.submit(3, t + 10_800, 12_000, 2_700)
    fresh = accrue(MeterLedger(True, 2, t + 7_200, 11_800, 2_600), 3, t + 10_800, 12_000, 2_700, schedule)
    assert logged(billing, receipt) == recorded(meter.address, fresh)
    standing = standing_charge(schedule.versions, t + 7_200, t + 10_800)
    assert billing.contract.functions.openBill(meter.address).call() == [
        2, t + 7_200, t + 10_800, 200, 100, fresh.period_import_cost, fresh.period_export_credit, standing,
        fresh.period_import_cost + standing - fresh.period_export_credit,
    ]


def test_a_bill_whose_export_credit_exceeds_its_charges_is_issued_with_a_negative_amount(meter: OpenMeter) -> None:
    billing = meter.billing
    start = next_boundary(billing)
    billing.set_tariff(TariffVersion(start, 0, PriceRule.flat(1_000), PriceRule.flat(50_000)))
    advance(billing, start + 1_800 - chain_now(billing))
    meter.submit(2, start, meter.ledger.last_energy_wh)
    billing.close_billing_period(meter.address)
    meter.submit(3, start + 1_800, meter.ledger.last_energy_wh + 100, meter.ledger.last_export_wh + 3_000)
    (event,) = billing.events("BillIssued", billing.close_billing_period(meter.address))
    assert (event.args.importCost, event.args.exportCredit, event.args.standingCharge) == (
        100_000, 150_000_000, 0)
    assert event.args.amountDue == 100_000 - 150_000_000


def test_closing_a_period_with_no_reading_reverts_with_empty_billing_period(billing: Billing) -> None:
    meter = Account.create().address
    billing.register_meter(meter, ACCOUNT_REF, "north", 0, chain_now(billing) - DAY)
    assert refused(billing, lambda: billing.close_billing_period(meter)) == f"EmptyBillingPeriod({meter.lower()}, 1)"


def test_closing_a_period_twice_in_a_row_reverts_with_empty_billing_period(meter: OpenMeter) -> None:
    meter.billing.close_billing_period(meter.address)
    reason = refused(meter.billing, lambda: meter.billing.close_billing_period(meter.address))
    assert reason == f"EmptyBillingPeriod({meter.address.lower()}, 2)"


# ---------------------------------------------------------------- grid alerts


def test_raise_grid_alert_emits_grid_alert_with_consecutive_ids(billing: Billing) -> None:
    expires = chain_now(billing) + 3_600
    first = billing.raise_grid_alert(2, "frequency_dip", "north", "Please reduce usage until 18:00.", expires)
    second = billing.raise_grid_alert(0, "info", "", "All clear soon.", expires + 1)
    assert logged(billing, first) == [
        (
            "GridAlert",
            {
                "id": 1,
                "severity": 2,
                "kind": text32("frequency_dip"),
                "region": text32("north"),
                "message": "Please reduce usage until 18:00.",
                "expiresAt": expires,
            },
        )
    ]
    assert [args["id"] for _, args in logged(billing, second)] == [2]
    assert billing.contract.functions.isAlertActive(1).call() is True
    assert billing.contract.functions.isAlertActive(2).call() is True
    assert billing.contract.functions.isAlertActive(3).call() is False


def test_raise_grid_alert_returns_the_new_alert_id(billing: Billing) -> None:
    call = billing.contract.functions.raiseGridAlert(1, text32("k"), bytes(32), "m", chain_now(billing) + 600)
    grid = Account.from_key(billing.settings.grid_operator_key).address
    assert call.call({"from": grid}) == 1


def test_raising_an_alert_with_severity_above_two_reverts_with_invalid_severity(billing: Billing) -> None:
    expires = chain_now(billing) + 600
    assert refused(billing, lambda: billing.raise_grid_alert(3, "k", "", "m", expires)) == "InvalidSeverity(3)"


@pytest.mark.parametrize("offset", [-60, None])
def test_raising_an_alert_that_is_already_expired_reverts_with_invalid_expiry(
    billing: Billing, offset: int | None
) -> None:
    expires = 0 if offset is None else chain_now(billing) + offset
    reason = refused(billing, lambda: billing.raise_grid_alert(0, "k", "", "m", expires))
    match = re.fullmatch(r"InvalidExpiry\((\d+), (\d+)\)", reason)
    assert match is not None, reason
    assert int(match[1]) == expires
    assert abs(int(match[2]) - chain_now(billing)) <= 5


def test_clear_grid_alert_emits_grid_alert_cleared_and_deactivates_it(billing: Billing) -> None:
    billing.raise_grid_alert(1, "k", "", "m", chain_now(billing) + 600)
    receipt = billing.clear_grid_alert(1)
    assert logged(billing, receipt) == [("GridAlertCleared", {"id": 1})]
    assert billing.contract.functions.isAlertActive(1).call() is False


def test_clearing_a_cleared_alert_reverts_with_alert_not_active(billing: Billing) -> None:
    billing.raise_grid_alert(1, "k", "", "m", chain_now(billing) + 600)
    billing.clear_grid_alert(1)
    assert refused(billing, lambda: billing.clear_grid_alert(1)) == "AlertNotActive(1)"


def test_clearing_an_alert_never_raised_reverts_with_alert_not_active(billing: Billing) -> None:
    assert refused(billing, lambda: billing.clear_grid_alert(99)) == "AlertNotActive(99)"


def test_alert_is_no_longer_active_once_its_expiry_has_passed(billing: Billing) -> None:
    billing.raise_grid_alert(0, "k", "", "m", chain_now(billing) + 600)
    assert billing.contract.functions.isAlertActive(1).call() is True
    billing.client.w3.provider.make_request("evm_increaseTime", [601])
    billing.client.w3.provider.make_request("evm_mine", [])
    assert billing.contract.functions.isAlertActive(1).call() is False


# ---------------------------------------------------------------- views


def test_meter_state_of_an_unregistered_meter_is_all_zero(billing: Billing) -> None:
    assert billing.contract.functions.meterState(Account.create().address).call() == [
        False, False, bytes(32), bytes(32), 0, 0, 0, 0
    ]


def test_open_bill_of_an_unregistered_meter_reverts_with_unknown_meter(billing: Billing) -> None:
    stranger = Account.create().address
    with pytest.raises(Exception) as excinfo:
        billing.contract.functions.openBill(stranger).call()
    assert revert_reason(excinfo.value, billing.deployment.abi) == f"UnknownMeter({stranger.lower()})"


def test_meter_at_lists_meters_in_registration_order(billing: Billing) -> None:
    count = billing.contract.functions.meterCount().call()
    new = [Account.create().address for _ in range(2)]
    for address in new:
        billing.register_meter(address, ACCOUNT_REF, "north", 0, 0)
    assert billing.contract.functions.meterCount().call() == count + 2
    assert billing.meters()[count:] == new
    with pytest.raises(ContractPanicError):  # index out of bounds
        billing.contract.functions.meterAt(count + 2).call()


def test_domain_separator_is_bound_to_this_chain_and_this_deployment(billing: Billing) -> None:
    separator = billing.contract.functions.domainSeparator().call()
    assert separator == Domain(1337, billing.deployment.address).separator()
    assert separator != Domain(1, billing.deployment.address).separator()


# ---------------------------------------------------------------- role gates


def _stranger_meter() -> str:
    return Account.create().address


GATED: list[tuple[str, Callable[[str], tuple[Any, ...]], str, bytes]] = [
    ("registerMeter", lambda m: (m, ACCOUNT_REF, bytes(32), 0, 0), "gateway_key", OPERATOR_ROLE),
    ("registerMeter", lambda m: (m, ACCOUNT_REF, bytes(32), 0, 0), "admin_key", OPERATOR_ROLE),
    ("deactivateMeter", lambda m: (m,), "gateway_key", OPERATOR_ROLE),
    ("reactivateMeter", lambda m: (m,), "grid_operator_key", OPERATOR_ROLE),
    ("setTariff", lambda m: (TariffVersion.flat(1, 1).as_struct(),), "grid_operator_key", OPERATOR_ROLE),
    ("publishDayAheadPrices", lambda m: (0, [1], []), "gateway_key", OPERATOR_ROLE),
    ("addClockChanges", lambda m: ([(2**31, 60)],), "grid_operator_key", OPERATOR_ROLE),
    ("closeBillingPeriod", lambda m: (m,), "gateway_key", OPERATOR_ROLE),
    ("submitReadings", lambda m: (bytes(104),), "operator_key", GATEWAY_ROLE),
    ("raiseGridAlert", lambda m: (0, bytes(32), bytes(32), "m", 2**40), "operator_key", GRID_OPERATOR_ROLE),
    ("clearGridAlert", lambda m: (1,), "gateway_key", GRID_OPERATOR_ROLE),
    ("grantRole", lambda m: (OPERATOR_ROLE, m), "operator_key", DEFAULT_ADMIN_ROLE),
]


@pytest.mark.parametrize(
    ("function", "args", "caller", "role"), GATED, ids=[f"{g[0]}-by-{g[2]}" for g in GATED]
)
def test_role_gated_function_called_by_the_wrong_account_reverts_with_access_control_unauthorized_account(
    billing: Billing, function: str, args: Callable[[str], tuple[Any, ...]], caller: str, role: bytes
) -> None:
    key = getattr(billing.settings, caller)
    call = billing.contract.functions[function](*args(_stranger_meter()))
    reason = refused(billing, lambda: billing.client.transact(key, call))
    assert reason == f"AccessControlUnauthorizedAccount({Account.from_key(key).address.lower()}, 0x{role.hex()})"


def test_chain_error_message_names_the_decoded_custom_error(billing: Billing) -> None:
    call = billing.contract.functions.setTariff(TariffVersion.flat(1, 1).as_struct())
    with pytest.raises(ChainError) as excinfo:
        billing.client.transact(billing.settings.gateway_key, call)
    gateway = Account.from_key(billing.settings.gateway_key).address
    assert f"AccessControlUnauthorizedAccount({gateway.lower()}, 0x{OPERATOR_ROLE.hex()})" in str(excinfo.value)


def test_a_reading_after_a_three_day_gap_is_priced_in_closed_form_within_the_batch_gas_bound(
    meter: OpenMeter,
) -> None:
    billing = meter.billing
    start = next_boundary(billing)
    day_ahead = TariffVersion(start, 50_000, PriceRule.banded(PEAK, [8_500, 24_670, 35_000]),
                              PriceRule.day_ahead(4_000), CLOCK_LOCAL)
    billing.set_tariff(day_ahead)
    billing.publish_day_ahead(start, [0] * 48, [5_000 + 10 * i for i in range(48)])
    advance(billing, start + 3 * DAY + 600 - chain_now(billing))
    meter.submit(2, start + 17, meter.ledger.last_energy_wh + 1)
    before = meter.ledger
    reading = meter.sign(3, start + 3 * DAY + 17, before.last_energy_wh + 30_000, before.last_export_wh + 9_000)
    extra = extra_periods([(before.last_timestamp, reading[0].timestamp)])
    assert extra == -(-(LONG_GAP_GAS + GAS_PER_GAP_PERIOD * 144) // GAS_PER_EXTRA_PERIOD)  # 144 half hours
    call = billing.contract.functions.submitReadings(pack_reading(*reading))
    receipt = billing.client.transact(billing.settings.gateway_key, call, gas=gas_limit_for(1, extra))
    expected = accrue(before, 3, reading[0].timestamp, reading[0].energy_wh, reading[0].export_wh, billing.schedule())
    assert logged(billing, receipt) == recorded(meter.address, expected)
    assert receipt["gasUsed"] < gas_limit_for(1, extra) * 0.8
    assert receipt["gasUsed"] < 144 * 3_700 // 2  # well under half of pricing it half hour by half hour
