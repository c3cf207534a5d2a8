"""SmartMeterBilling against a real Ganache: every external function, every reason a reading is
rejected, every role gate, each with the exact custom error or the exact events it produces."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keys import keys
from eth_utils import keccak
from web3.exceptions import ContractPanicError

from common.billing import Billing, text32
from common.chain import ChainClient, ErrorDecoder
from common.deployment import Deployment
from common.eip712 import Domain, ReadingData, reading_digest, sign_reading
from common.errors import ChainError
from common.settings import Settings
from common.tariff import MeterLedger, RejectReason, Tariff, accrue

OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")
GATEWAY_ROLE = keccak(text="GATEWAY_ROLE")
GRID_OPERATOR_ROLE = keccak(text="GRID_OPERATOR_ROLE")
DEFAULT_ADMIN_ROLE = bytes(32)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ACCOUNT_REF = b"\x42" * 32
DAY = 86_400

EVENT_NAMES = (
    "MeterRegistered",
    "MeterDeactivated",
    "MeterReactivated",
    "TariffChanged",
    "ReadingRecorded",
    "ReadingRejected",
    "BillUpdated",
    "BillIssued",
    "GridAlert",
    "GridAlertCleared",
)
METER_EVENTS = (
    "MeterRegistered",
    "MeterDeactivated",
    "MeterReactivated",
    "ReadingRecorded",
    "ReadingRejected",
    "BillUpdated",
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
    """Every contract event in the receipt, in log order, as (name, args)."""
    found = []
    for name in EVENT_NAMES:
        for event in billing.events(name, receipt):
            found.append((event["logIndex"], name, dict(event["args"])))
    return [(name, args) for _, name, args in sorted(found, key=lambda item: item[0])]


def key_of(account: LocalAccount) -> bytes:
    return bytes(account.key)


def signed(meter: LocalAccount, domain: Domain, seq: int, timestamp: int, energy_wh: int) -> tuple[ReadingData, str]:
    """A reading and its meter's signature."""
    reading = ReadingData(meter.address, seq, timestamp, energy_wh)
    return reading, sign_reading(key_of(meter), domain, reading)


def snapshot_of(billing: Billing, meter: str) -> tuple[Any, Any]:
    """Everything the contract holds for a meter (to show a rejection changed nothing)."""
    contract = billing.contract
    return contract.functions.meterState(meter).call(), contract.functions.openBill(meter).call()


def current_tariff(billing: Billing) -> Tariff:
    info = billing.tariff()
    return Tariff(info.unit_rate, info.standing_charge)


def recorded(meter: str, seq: int, timestamp: int, energy_wh: int, ledger: MeterLedger) -> list[tuple[str, dict]]:
    """The two events a recorded reading emits."""
    return [
        ("ReadingRecorded", {"meter": meter, "seq": seq, "timestamp": timestamp, "energyWh": energy_wh}),
        (
            "BillUpdated",
            {"meter": meter, "seq": seq, "periodEnergyWh": ledger.period_energy_wh, "amountDue": ledger.amount_due},
        ),
    ]


def rejected(meter: str, seq: int, reason: RejectReason) -> tuple[str, dict]:
    return ("ReadingRejected", {"meter": meter, "seq": seq, "reason": int(reason)})


class OpenMeter:
    """A registered meter opened a day ago at 10,000 Wh, with one recorded reading (seq 1, +1 h, +1 kWh)."""

    def __init__(self, billing: Billing) -> None:
        self.billing = billing
        self.account: LocalAccount = Account.create()
        self.address = self.account.address
        self.opened = chain_now(billing) - DAY
        billing.register_meter(self.address, ACCOUNT_REF, "north", 10_000, self.opened)
        self.ledger = MeterLedger(True, 0, self.opened, 10_000)
        self.submit(1, self.opened + 3_600, 11_000)

    def sign(self, seq: int, timestamp: int, energy_wh: int) -> tuple[ReadingData, str]:
        return signed(self.account, self.billing.deployment.domain, seq, timestamp, energy_wh)

    def submit(self, seq: int, timestamp: int, energy_wh: int) -> Any:
        receipt = self.billing.submit_readings([self.sign(seq, timestamp, energy_wh)])
        if logged(self.billing, receipt)[0][0] == "ReadingRecorded":
            self.ledger = accrue(self.ledger, seq, timestamp, energy_wh, current_tariff(self.billing))
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
        True, True, ACCOUNT_REF, text32("south-east"), 0, opened, 123_456
    ]
    assert billing.contract.functions.meterCount().call() == count_before + 1
    assert billing.contract.functions.meterAt(count_before).call() == meter
    assert billing.contract.functions.openBill(meter).call() == [1, opened, opened, 0, 0, 0, 0]


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
    assert logged(billing, receipt) == recorded(meter.address, 2, meter.opened + 7_200, 11_500, meter.ledger)


def test_reactivating_an_active_meter_reverts_with_meter_already_active(meter: OpenMeter) -> None:
    reason = refused(meter.billing, lambda: meter.billing.reactivate_meter(meter.address))
    assert reason == f"MeterAlreadyActive({meter.address.lower()})"


@pytest.mark.parametrize("operation", ["deactivate_meter", "reactivate_meter", "close_billing_period"])
def test_operations_on_an_unregistered_meter_revert_with_unknown_meter(billing: Billing, operation: str) -> None:
    stranger = Account.create().address
    reason = refused(billing, lambda: getattr(billing, operation)(stranger))
    assert reason == f"UnknownMeter({stranger.lower()})"


# ---------------------------------------------------------------- setTariff


def test_set_tariff_emits_tariff_changed_with_the_next_version(billing: Billing) -> None:
    _, _, _, version = billing.contract.functions.tariff().call()
    receipt = billing.set_tariff(30_000, 60_000)
    block_time = billing.client.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert logged(billing, receipt) == [
        (
            "TariffChanged",
            {"version": version + 1, "unitRate": 30_000, "standingCharge": 60_000, "effectiveFrom": block_time},
        )
    ]
    assert billing.contract.functions.tariff().call() == [30_000, 60_000, block_time, version + 1]


def test_deployed_tariff_is_version_one_with_the_configured_rates(billing: Billing, base_settings: Settings) -> None:
    unit_rate, standing, _, version = billing.contract.functions.tariff().call()
    assert (unit_rate, standing, version) == (base_settings.tariff_unit_rate, base_settings.tariff_standing_charge, 1)


def test_set_tariff_with_a_zero_unit_rate_reverts_with_invalid_tariff(billing: Billing) -> None:
    assert refused(billing, lambda: billing.set_tariff(0, 5)) == "InvalidTariff(0, 5)"


def test_tariff_change_applies_only_to_readings_recorded_after_it(meter: OpenMeter) -> None:
    billing = meter.billing
    old = current_tariff(billing)
    before_change = billing.bill(meter.address)
    billing.set_tariff(old.unit_rate * 2, old.standing_charge * 3)
    assert billing.bill(meter.address) == before_change
    receipt = meter.submit(2, meter.opened + 7_200, 12_000)
    expected = accrue(
        accrue(MeterLedger(True, 0, meter.opened, 10_000), 1, meter.opened + 3_600, 11_000, old),
        2, meter.opened + 7_200, 12_000, Tariff(old.unit_rate * 2, old.standing_charge * 3),
    )
    assert logged(billing, receipt) == recorded(meter.address, 2, meter.opened + 7_200, 12_000, expected)
    assert billing.bill(meter.address).energy_cost == 1_000 * old.unit_rate + 1_000 * old.unit_rate * 2
    assert billing.bill(meter.address).standing_charge == (
        3_600 * old.standing_charge * 1_000 // DAY + 3_600 * old.standing_charge * 3 * 1_000 // DAY
    )
    assert billing.bill(meter.address).amount_due == expected.amount_due


# ---------------------------------------------------------------- submitReadings


def test_signed_reading_is_recorded_with_reading_recorded_and_bill_updated(billing: Billing) -> None:
    account = Account.create()
    opened = chain_now(billing) - DAY
    billing.register_meter(account.address, ACCOUNT_REF, "north", 1_000, opened)
    receipt = billing.submit_readings([signed(account, billing.deployment.domain, 1, opened + 1_800, 1_500)])
    ledger = accrue(MeterLedger(True, 0, opened, 1_000), 1, opened + 1_800, 1_500, current_tariff(billing))
    assert logged(billing, receipt) == recorded(account.address, 1, opened + 1_800, 1_500, ledger)
    assert billing.contract.functions.meterState(account.address).call() == [
        True, True, ACCOUNT_REF, text32("north"), 1, opened + 1_800, 1_500
    ]
    assert billing.contract.functions.openBill(account.address).call() == [
        1, opened, opened + 1_800, 500, ledger.period_energy_cost, ledger.period_standing_charge, ledger.amount_due
    ]


def test_several_readings_of_one_meter_in_one_batch_are_checked_in_order(meter: OpenMeter) -> None:
    billing = meter.billing
    t = meter.opened
    receipt = billing.submit_readings([meter.sign(2, t + 4_000, 11_100), meter.sign(3, t + 5_000, 11_300)])
    tariff = current_tariff(billing)
    second = accrue(meter.ledger, 2, t + 4_000, 11_100, tariff)
    third = accrue(second, 3, t + 5_000, 11_300, tariff)
    assert logged(billing, receipt) == [
        *recorded(meter.address, 2, t + 4_000, 11_100, second),
        *recorded(meter.address, 3, t + 5_000, 11_300, third),
    ]


def test_reading_at_exactly_the_maximum_plausible_power_is_recorded(meter: OpenMeter, base_settings: Settings) -> None:
    elapsed = 360
    limit = base_settings.max_power_w * elapsed // 3_600
    last = meter.ledger
    receipt = meter.submit(2, last.last_timestamp + elapsed, last.last_energy_wh + limit)
    assert [name for name, _ in logged(meter.billing, receipt)] == ["ReadingRecorded", "BillUpdated"]


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
    ]
    receipt = billing.submit_readings(batch)
    tariff = current_tariff(billing)
    m2 = accrue(meter.ledger, 2, t + 4_000, 11_100, tariff)
    o1 = accrue(MeterLedger(True, 0, t, 0), 1, t + 60, 10, tariff)
    m3 = accrue(m2, 3, t + 4_300, 11_400, tariff)
    assert receipt["status"] == 1
    assert logged(billing, receipt) == [
        *recorded(meter.address, 2, t + 4_000, 11_100, m2),
        rejected(other.address, 1, RejectReason.BAD_SIGNATURE),
        rejected(meter.address, 2, RejectReason.STALE_SEQUENCE),
        *recorded(other.address, 1, t + 60, 10, o1),
        rejected(meter.address, 3, RejectReason.REGISTER_DECREASED),
        *recorded(meter.address, 3, t + 4_300, 11_400, m3),
    ]
    assert billing.bill(meter.address).amount_due == m3.amount_due
    assert billing.bill(other.address).amount_due == o1.amount_due


def test_batch_with_fewer_signatures_than_readings_reverts_with_length_mismatch(meter: OpenMeter) -> None:
    billing = meter.billing
    reading, signature = meter.sign(2, meter.opened + 4_000, 11_100)
    row = (reading.meter, reading.seq, reading.timestamp, reading.energy_wh)
    call = billing.contract.functions.submitReadings([row, row], [bytes.fromhex(signature[2:])])
    reason = refused(billing, lambda: billing.client.transact(billing.settings.gateway_key, call))
    assert reason == "LengthMismatch(2, 1)"


def test_empty_batch_reverts_with_bad_batch_size(billing: Billing) -> None:
    assert refused(billing, lambda: billing.submit_readings([])) == "BadBatchSize(0, 250)"


def test_batch_above_max_batch_reverts_with_bad_batch_size(meter: OpenMeter) -> None:
    billing = meter.billing
    assert billing.contract.functions.MAX_BATCH().call() == 250
    one = meter.sign(2, meter.opened + 4_000, 11_100)
    assert refused(billing, lambda: billing.submit_readings([one] * 251)) == "BadBatchSize(251, 250)"


# ---------------------------------------------------------------- every ReadingRejected reason


def _bad_reading(meter: OpenMeter, case: str, max_power_w: int) -> tuple[ReadingData, str]:
    """A reading of ``meter`` that fails in the way ``case`` names (state: seq 1 at opened + 1 h)."""
    last = meter.ledger
    t, wh = last.last_timestamp, last.last_energy_wh
    stranger = Account.create()
    domain = meter.billing.deployment.domain
    if case == "signed by another key":
        reading = ReadingData(meter.address, 2, t + 60, wh + 10)
        return reading, sign_reading(key_of(stranger), domain, reading)
    if case == "signature of another reading":
        return ReadingData(meter.address, 2, t + 60, wh + 11), meter.sign(2, t + 60, wh + 10)[1]
    if case == "signature not 65 bytes":
        return ReadingData(meter.address, 2, t + 60, wh + 10), meter.sign(2, t + 60, wh + 10)[1][:-2]
    if case == "signed for another verifying contract":
        return signed(meter.account, Domain(domain.chain_id, stranger.address), 2, t + 60, wh + 10)
    if case == "signed for another chain id":
        return signed(meter.account, Domain(1, domain.verifying_contract), 2, t + 60, wh + 10)
    if case == "high-s signature":
        reading, signature = meter.sign(2, t + 60, wh + 10)
        raw = bytes.fromhex(signature[2:])
        high_s = (SECP256K1_N - int.from_bytes(raw[32:64], "big")).to_bytes(32, "big")
        flipped = raw[:32] + high_s + bytes([55 - raw[64]])
        digest = reading_digest(domain.separator(), reading)
        r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(high_s, "big")
        malleable = keys.Signature(vrs=(flipped[64] - 27, r, s))
        # The flipped signature is valid secp256k1 for the meter: only the low-s rule rejects it.
        assert malleable.recover_public_key_from_msg_hash(digest).to_checksum_address() == meter.address
        return reading, "0x" + flipped.hex()
    if case == "unknown meter":
        return signed(stranger, domain, 1, t + 60, 10)
    if case == "stale sequence":
        return meter.sign(1, t + 60, wh + 10)
    if case == "equal timestamp":
        return meter.sign(2, t, wh)
    if case == "earlier timestamp":
        return meter.sign(2, t - 1, wh)
    if case == "future timestamp":
        return meter.sign(2, chain_now(meter.billing) + 3_600, wh + 10)
    if case == "register decreased":
        return meter.sign(2, t + 60, wh - 1)
    if case == "implausible delta":
        return meter.sign(2, t + 360, wh + max_power_w * 360 // 3_600 + 1)
    if case == "sequence above 32 bits":
        return meter.sign(2**32, t + 60, wh + 10)
    if case == "timestamp above 32 bits":
        return meter.sign(2, 2**32, wh + 10)
    if case == "register above 48 bits":
        return meter.sign(2, t + 60, 2**48)
    raise AssertionError(case)


REJECTIONS = [
    ("signed by another key", RejectReason.BAD_SIGNATURE),
    ("signature of another reading", RejectReason.BAD_SIGNATURE),
    ("signature not 65 bytes", RejectReason.BAD_SIGNATURE),
    ("signed for another verifying contract", RejectReason.BAD_SIGNATURE),
    ("signed for another chain id", RejectReason.BAD_SIGNATURE),
    ("high-s signature", RejectReason.BAD_SIGNATURE),
    ("unknown meter", RejectReason.METER_NOT_ACTIVE),
    ("stale sequence", RejectReason.STALE_SEQUENCE),
    ("equal timestamp", RejectReason.STALE_TIMESTAMP),
    ("earlier timestamp", RejectReason.STALE_TIMESTAMP),
    ("future timestamp", RejectReason.FUTURE_TIMESTAMP),
    ("register decreased", RejectReason.REGISTER_DECREASED),
    ("implausible delta", RejectReason.IMPLAUSIBLE_DELTA),
    ("sequence above 32 bits", RejectReason.OUT_OF_RANGE),
    ("timestamp above 32 bits", RejectReason.OUT_OF_RANGE),
    ("register above 48 bits", RejectReason.OUT_OF_RANGE),
]


@pytest.mark.parametrize(("case", "reason"), REJECTIONS, ids=[case for case, _ in REJECTIONS])
def test_bad_reading_is_rejected_with_its_reason_and_changes_nothing(
    meter: OpenMeter, base_settings: Settings, case: str, reason: RejectReason
) -> None:
    billing = meter.billing
    reading, signature = _bad_reading(meter, case, base_settings.max_power_w)
    before = snapshot_of(billing, meter.address)
    receipt = billing.submit_readings([(reading, signature)])
    assert logged(billing, receipt) == [rejected(reading.meter, reading.seq, reason)]
    assert snapshot_of(billing, meter.address) == before


def test_reading_of_a_deactivated_meter_is_rejected_as_meter_not_active(meter: OpenMeter) -> None:
    billing = meter.billing
    billing.deactivate_meter(meter.address)
    before = snapshot_of(billing, meter.address)
    receipt = billing.submit_readings([meter.sign(2, meter.opened + 4_000, 11_100)])
    assert logged(billing, receipt) == [rejected(meter.address, 2, RejectReason.METER_NOT_ACTIVE)]
    assert snapshot_of(billing, meter.address) == before


def test_reading_that_would_overflow_the_open_period_is_rejected_as_period_overflow(meter: OpenMeter) -> None:
    billing = meter.billing
    billing.set_tariff(2**32 - 1, 0)
    last = meter.ledger
    # 70,000 Wh at 2^32-1 millipence/kWh is 3.0e14 micropence, above the 48-bit energy-cost field.
    elapsed = 70_000 * 3_600 // 24_000 + 1
    before = snapshot_of(billing, meter.address)
    receipt = billing.submit_readings([meter.sign(2, last.last_timestamp + elapsed, last.last_energy_wh + 70_000)])
    assert logged(billing, receipt) == [rejected(meter.address, 2, RejectReason.PERIOD_OVERFLOW)]
    assert snapshot_of(billing, meter.address) == before


# ---------------------------------------------------------------- closeBillingPeriod


def test_close_billing_period_issues_the_bill_and_opens_a_period_at_zero(meter: OpenMeter) -> None:
    billing = meter.billing
    t = meter.opened
    meter.submit(2, t + 7_200, 11_800)
    issued = meter.ledger
    receipt = billing.close_billing_period(meter.address)
    assert logged(billing, receipt) == [
        (
            "BillIssued",
            {
                "meter": meter.address,
                "periodId": 1,
                "periodStart": t,
                "periodEnd": t + 7_200,
                "energyWh": 1_800,
                "energyCost": issued.period_energy_cost,
                "standingCharge": issued.period_standing_charge,
                "amountDue": issued.amount_due,
            },
        )
    ]
    assert issued.period_energy_cost == 1_800 * current_tariff(billing).unit_rate
    assert billing.contract.functions.openBill(meter.address).call() == [2, t + 7_200, t + 7_200, 0, 0, 0, 0]
    assert billing.meter(meter.address).last_energy_wh == 11_800

    receipt = meter.submit(3, t + 10_800, 12_000)
    fresh = accrue(MeterLedger(True, 2, t + 7_200, 11_800), 3, t + 10_800, 12_000, current_tariff(billing))
    assert logged(billing, receipt) == recorded(meter.address, 3, t + 10_800, 12_000, fresh)
    assert billing.contract.functions.openBill(meter.address).call() == [
        2, t + 7_200, t + 10_800, 200, fresh.period_energy_cost, fresh.period_standing_charge, fresh.amount_due
    ]


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
        False, False, bytes(32), bytes(32), 0, 0, 0
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
    ("setTariff", lambda m: (1, 1), "grid_operator_key", OPERATOR_ROLE),
    ("closeBillingPeriod", lambda m: (m,), "gateway_key", OPERATOR_ROLE),
    ("submitReadings", lambda m: ([(m, 1, 1, 1)], [bytes(65)]), "operator_key", GATEWAY_ROLE),
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
    call = billing.contract.functions.setTariff(1, 1)
    with pytest.raises(ChainError) as excinfo:
        billing.client.transact(billing.settings.gateway_key, call)
    gateway = Account.from_key(billing.settings.gateway_key).address
    assert f"AccessControlUnauthorizedAccount({gateway.lower()}, 0x{OPERATOR_ROLE.hex()})" in str(excinfo.value)
