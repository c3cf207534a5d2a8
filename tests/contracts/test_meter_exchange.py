"""SmartMeterBilling's meter exchange and register reset against a real Ganache: what each moves, what the
open bill keeps, and every refusal with its custom error."""

# ruff: noqa: F811 - the contract tests' `billing` and `meter` fixtures are imported, and test arguments shadow them

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from common.billing import Billing, text32
from common.events import unpack_record
from common.tariff import MeterLedger, RejectReason, accrue, final_read, restart, standing_charge
from tests.contracts.test_smart_meter_billing import (
    ACCOUNT_REF,
    OPERATOR_ROLE,
    OpenMeter,
    billing,  # noqa: F401 - the fixture
    chain_now,
    logged,
    meter,  # noqa: F401 - the fixture
    recorded,
    refused,
    signed,
)

MAX_SEQ = 2**32 - 1


def record_of(ledger: MeterLedger) -> dict[str, int]:
    """A ledger as ``ReadingRecorded``'s record (and the final records of the new events) lays it out."""
    return {"seq": ledger.last_seq, "timestamp": ledger.last_timestamp, "energyWh": ledger.last_energy_wh,
            "exportWh": ledger.last_export_wh, "periodImportCost": ledger.period_import_cost,
            "periodExportCredit": ledger.period_export_credit}


def open_bill(billing: Billing, address: str) -> list[Any]:
    return list(billing.contract.functions.openBill(address).call())


def bill_row(start: int, ledger: MeterLedger, import_wh: int, export_wh: int, billing: Billing,
             period_id: int = 1) -> list[int]:
    """What ``openBill`` should say for a period from ``start`` with the ledger's figures."""
    standing = standing_charge(billing.schedule().versions, start, ledger.last_timestamp)
    return [period_id, start, ledger.last_timestamp, import_wh, export_wh, ledger.period_import_cost,
            ledger.period_export_credit, standing,
            ledger.period_import_cost + standing - ledger.period_export_credit]


# ---------------------------------------------------------------- exchangeMeter


def test_exchange_moves_the_account_and_open_bill_to_the_new_meter_after_pricing_the_final_read(
    meter: OpenMeter,
) -> None:
    billing = meter.billing
    t = meter.opened
    new = Account.create()
    receipt = billing.exchange_meter(meter.address, new.address, 11_800, 900, t + 7_200, 5, 0)
    final = final_read(meter.ledger, t + 7_200, 11_800, 900, billing.schedule())
    assert final.period_import_cost > meter.ledger.period_import_cost  # the final read's energy was priced
    ((name, args),) = logged(billing, receipt)
    assert (name, args["meter"], args["newMeter"], args["openingImportWh"], args["openingExportWh"]) == (
        "MeterExchanged", meter.address, new.address, 5, 0)
    assert unpack_record(args["finalRecord"]) == record_of(final)

    assert billing.contract.functions.meterState(new.address).call() == [
        True, True, ACCOUNT_REF, text32("north"), 0, t + 7_200, 5, 0]
    assert open_bill(billing, new.address) == bill_row(t, final, 1_800, 900, billing)
    # The old meter keeps its final read, with nothing left to bill.
    assert billing.contract.functions.meterState(meter.address).call() == [
        True, False, ACCOUNT_REF, text32("north"), 1, t + 7_200, 11_800, 900]
    assert open_bill(billing, meter.address)[3:] == [0] * 6
    assert billing.meters()[-1] == new.address

    # The new meter's readings go on the same bill, from seq 1.
    ledger = restart(final, 5, 0)
    reading = signed(new, billing.deployment.domain, 1, t + 10_800, 505, 100)
    receipt = billing.submit_readings([reading])
    ledger = accrue(ledger, 1, t + 10_800, 505, 100, billing.schedule())
    assert logged(billing, receipt) == recorded(new.address, ledger)
    assert open_bill(billing, new.address) == bill_row(t, ledger, 2_300, 1_000, billing)
    (issued,) = billing.events("BillIssued", billing.close_billing_period(new.address))
    assert (issued.args.periodId, issued.args.periodStart, issued.args.importWh, issued.args.exportWh,
            issued.args.importCost) == (1, t, 2_300, 1_000, ledger.period_import_cost)


def test_an_exchanged_meter_is_retired_for_good(meter: OpenMeter) -> None:
    billing = meter.billing
    t = meter.opened
    billing.exchange_meter(meter.address, Account.create().address, 11_000, 500, t + 3_600)
    receipt = billing.submit_readings([meter.sign(2, t + 7_200, 11_100)])
    assert logged(billing, receipt) == [
        ("ReadingRejected", {"meter": meter.address, "seq": 2, "reason": int(RejectReason.METER_NOT_ACTIVE)})]
    retired = f"MeterRetired({meter.address.lower()})"
    assert refused(billing, lambda: billing.reactivate_meter(meter.address)) == retired
    assert refused(billing, lambda: billing.exchange_meter(meter.address, Account.create().address, 11_000, 500,
                                                           t + 3_600)) == retired
    assert refused(billing, lambda: billing.reset_register(meter.address, 11_000, 500, t + 3_600)) == retired
    assert refused(billing, lambda: billing.register_meter(meter.address, ACCOUNT_REF, "n", 0, 0)) == (
        f"MeterAlreadyRegistered({meter.address.lower()})")
    assert refused(billing, lambda: billing.close_billing_period(meter.address)) == (
        f"EmptyBillingPeriod({meter.address.lower()}, 1)")


def test_a_deactivated_meter_can_be_exchanged_and_its_successor_is_active(meter: OpenMeter) -> None:
    billing = meter.billing
    billing.deactivate_meter(meter.address)
    new = Account.create().address
    billing.exchange_meter(meter.address, new, 11_000, 500, meter.opened + 3_600)
    assert billing.meter(new).active is True


@pytest.mark.parametrize(("case", "reason"), [
    ("before the last reading", RejectReason.STALE_TIMESTAMP),
    ("energy at the last reading's time", RejectReason.STALE_TIMESTAMP),
    ("after the block", RejectReason.FUTURE_TIMESTAMP),
    ("register decreased", RejectReason.REGISTER_DECREASED),
    ("implausible", RejectReason.IMPLAUSIBLE_DELTA),
    ("above 48 bits", RejectReason.OUT_OF_RANGE),
])
def test_a_final_read_that_breaks_a_reading_rule_is_refused(meter: OpenMeter, case: str,
                                                            reason: RejectReason) -> None:
    billing = meter.billing
    t = meter.opened
    final = {
        "before the last reading": (11_000, 500, t + 3_599),
        "energy at the last reading's time": (11_001, 500, t + 3_600),
        "after the block": (11_000, 500, chain_now(billing) + 60),
        "register decreased": (10_999, 500, t + 7_200),
        "implausible": (11_000 + billing.settings.max_power_w, 500, t + 3_601),
        "above 48 bits": (2**48, 500, t + 7_200),
    }[case]
    expected = f"FinalReadRejected({meter.address.lower()}, {int(reason)})"
    assert refused(billing, lambda: billing.exchange_meter(meter.address, Account.create().address, *final)) == (
        expected)
    assert refused(billing, lambda: billing.reset_register(meter.address, *final)) == expected


def test_exchange_refuses_a_new_meter_that_is_registered_or_zero_and_an_unknown_meter(meter: OpenMeter) -> None:
    billing = meter.billing
    t = meter.opened
    other = Account.create().address
    billing.register_meter(other, ACCOUNT_REF, "north", 0, 0)
    for taken in (other, meter.address):
        assert refused(billing, lambda a=taken: billing.exchange_meter(meter.address, a, 11_000, 500, t + 3_600)) == (
            f"MeterAlreadyRegistered({taken.lower()})")
    zero = "0x" + "00" * 20
    assert refused(billing, lambda: billing.exchange_meter(meter.address, zero, 11_000, 500, t + 3_600)) == (
        "ZeroAddress()")
    stranger = Account.create().address
    assert refused(billing, lambda: billing.exchange_meter(stranger, Account.create().address, 0, 0, t)) == (
        f"UnknownMeter({stranger.lower()})")
    assert refused(billing, lambda: billing.reset_register(stranger, 0, 0, t)) == f"UnknownMeter({stranger.lower()})"
    assert refused(billing, lambda: billing.exchange_meter(meter.address, Account.create().address, 11_000, 500,
                                                           t + 3_600, 2**48)) == f"ValueTooLarge({2**48}, {2**48 - 1})"


# ---------------------------------------------------------------- resetRegister


def test_a_meter_whose_numbering_went_wrong_records_again_after_a_register_reset(meter: OpenMeter) -> None:
    billing = meter.billing
    t = meter.opened
    meter.submit(2, t + 7_200, 12_000, 700)
    # A firmware fault that jumps to the last seq can no longer use the meter up: the contract wants the next one.
    jump = meter.submit(MAX_SEQ, t + 8_000, 12_050)
    assert logged(billing, jump)[0][1]["reason"] == int(RejectReason.SEQUENCE_GAP)
    # Firmware that restarted its numbering is refused as stale, until the operator restarts the sequence.
    stuck = meter.submit(1, t + 9_000, 12_100)
    assert logged(billing, stuck)[0][1]["reason"] == int(RejectReason.STALE_SEQUENCE)
    before = meter.ledger
    # Firmware fault: the registers are fine; the final read is the last reading, and only the sequence restarts.
    receipt = billing.reset_register(meter.address, 12_000, 700, t + 7_200, 12_000, 700)
    ((name, args),) = logged(billing, receipt)
    assert (name, args["meter"], args["importWh"], args["exportWh"]) == ("RegisterReset", meter.address, 12_000, 700)
    assert unpack_record(args["finalRecord"]) == record_of(before)
    assert billing.contract.functions.meterState(meter.address).call()[4:] == [0, t + 7_200, 12_000, 700]
    meter.ledger = restart(before, 12_000, 700)
    receipt = meter.submit(1, t + 9_000, 12_100)
    assert logged(billing, receipt) == recorded(meter.address, meter.ledger)
    assert open_bill(billing, meter.address) == bill_row(t, meter.ledger, 2_100, 700, billing)


def test_a_register_rollover_keeps_the_bill_whole(meter: OpenMeter) -> None:
    billing = meter.billing
    t = meter.opened
    # The register rolled over to zero after 11,400 Wh; the reset's final read prices the 400 Wh before it.
    receipt = billing.reset_register(meter.address, 11_400, 600, t + 5_400, 0, 0)
    final = final_read(meter.ledger, t + 5_400, 11_400, 600, billing.schedule())
    (event,) = billing.events("RegisterReset", receipt)
    assert unpack_record(event.args.finalRecord) == record_of(final)
    assert open_bill(billing, meter.address) == bill_row(t, final, 1_400, 600, billing)
    meter.ledger = restart(final, 0, 0)
    meter.submit(1, t + 9_000, 300, 50)
    assert open_bill(billing, meter.address) == bill_row(t, meter.ledger, 1_700, 650, billing)
    # A reading signed under the old sequence, before the reset, cannot be recorded again.
    replayed = billing.submit_readings([meter.sign(2, t + 5_000, 11_300, 600)])
    assert logged(billing, replayed)[0][1]["reason"] == int(RejectReason.STALE_TIMESTAMP)
    (issued,) = billing.events("BillIssued", billing.close_billing_period(meter.address))
    assert (issued.args.importWh, issued.args.exportWh, issued.args.importCost, issued.args.exportCredit) == (
        1_700, 650, meter.ledger.period_import_cost, meter.ledger.period_export_credit)
    assert open_bill(billing, meter.address)[3:5] == [0, 0]


def test_a_reset_leaves_a_deactivated_meter_deactivated(meter: OpenMeter) -> None:
    billing = meter.billing
    billing.deactivate_meter(meter.address)
    billing.reset_register(meter.address, 11_000, 500, meter.opened + 3_600, 0, 0)
    assert billing.meter(meter.address).active is False


# ---------------------------------------------------------------- role gates


@pytest.mark.parametrize(("function", "args"), [
    ("exchangeMeter", lambda m: (m, Account.create().address, 0, 0, 0, 0, 0)),
    ("resetRegister", lambda m: (m, 0, 0, 0, 0, 0)),
])
@pytest.mark.parametrize("caller", ["gateway_key", "grid_operator_key", "admin_key"])
def test_exchange_and_reset_are_for_the_operator_only(billing: Billing, function: str, args: Any,
                                                       caller: str) -> None:
    key = getattr(billing.settings, caller)
    call = billing.contract.functions[function](*args(Account.create().address))
    reason = refused(billing, lambda: billing.client.transact(key, call))
    caller_address = Account.from_key(key).address.lower()
    assert reason == f"AccessControlUnauthorizedAccount({caller_address}, 0x{OPERATOR_ROLE.hex()})"
