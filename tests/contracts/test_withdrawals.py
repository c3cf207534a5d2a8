"""Withdrawing a tariff version or a UK clock change that has not taken effect (``withdrawTariff``,
``withdrawClockChange``): a far-future one no longer blocks a nearer one, nothing in effect can be
withdrawn, and the prices, offsets and the Python schedule read from the chain follow the withdrawal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak

from common.billing import Billing
from common.chain import ChainClient, ErrorDecoder
from common.deployer import CLOCK_CHANGE_YEARS
from common.deployment import Deployment
from common.eip712 import ReadingData, sign_reading
from common.errors import ChainError
from common.tariff import PERIOD_SECONDS, ClockTable, MeterLedger, TariffVersion, accrue, uk_clock_changes

DAY = 86_400
OPERATOR_ROLE = keccak(text="OPERATOR_ROLE")


@pytest.fixture
def billing(chain: ChainClient, deployment: Deployment, snapshot: None) -> Billing:
    """The contract on a chain reverted after the test."""
    return Billing(chain, deployment)


def refused(billing: Billing, send: Callable[[], Any]) -> str:
    """Run a transaction that must revert; return its decoded custom error."""
    with pytest.raises(ChainError) as excinfo:
        send()
    cause = excinfo.value.__cause__
    data = getattr(cause, "data", None)
    if isinstance(data, dict):
        data = data.get("result") or data.get("data")
    assert isinstance(data, str), excinfo.value
    return ErrorDecoder(billing.deployment.abi).decode(data)


def boundary(billing: Billing, after: int = 0) -> int:
    """The first period boundary a tariff may start at, plus ``after`` seconds."""
    earliest = billing.now() + billing.settings.max_future_skew + 15
    return -(-earliest // PERIOD_SECONDS) * PERIOD_SECONDS + after


def advance(billing: Billing, seconds: int) -> None:
    billing.client.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
    billing.client.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


# ---------------------------------------------------------------- tariff versions


def test_a_far_future_version_withdrawn_lets_a_nearer_one_take_its_number_and_price_the_readings(
    billing: Billing,
) -> None:
    far = TariffVersion.flat(90_000, 80_000, boundary(billing, 365 * DAY))
    billing.set_tariff(far)
    count = billing.contract.functions.tariffCount().call()
    near = TariffVersion.flat(30_000, 50_000, boundary(billing, DAY))
    assert refused(billing, lambda: billing.set_tariff(near)).startswith("NotAfterLastVersion(")

    receipt = billing.withdraw_tariff(count)
    assert [dict(e["args"]) for e in billing.events("TariffWithdrawn", receipt)] == [
        {"version": count, "effectiveFrom": far.effective_from}]
    assert billing.contract.functions.tariffCount().call() == count - 1
    billing.set_tariff(near)
    assert billing.versions()[-1] == near and billing.contract.functions.tariffCount().call() == count

    # A reading across the nearer version's start is priced by it, as the reference prices it.
    meter = Account.from_key(keccak(b"withdrawn-tariff-meter"))
    opened = billing.now()
    billing.register_meters([(meter.address, b"\x05" * 32, "north", 1_000)], opened_at=opened)
    advance(billing, near.effective_from + DAY - billing.now())
    reading = ReadingData(meter.address, 1, near.effective_from + 3_600, 9_000, 0)
    receipt = billing.submit_readings([(reading, sign_reading(bytes(meter.key), billing.deployment.domain, reading))])
    ledger = accrue(MeterLedger(True, 0, opened, 1_000), 1, reading.timestamp, 9_000, 0, billing.schedule())
    (recorded,) = billing.events("ReadingRecorded", receipt)
    assert recorded["args"]["periodImportCost"] == ledger.period_import_cost


def test_only_the_newest_version_not_yet_in_effect_can_be_withdrawn(billing: Billing) -> None:
    soon = TariffVersion.flat(30_000, 50_000, boundary(billing))
    later = TariffVersion.flat(31_000, 50_000, boundary(billing, DAY))
    billing.set_tariff(soon)
    billing.set_tariff(later)
    count = billing.contract.functions.tariffCount().call()
    assert refused(billing, lambda: billing.withdraw_tariff(count - 1)) == f"NotNewestVersion({count - 1}, {count})"
    assert refused(billing, lambda: billing.withdraw_tariff(count + 1)) == f"NotNewestVersion({count + 1}, {count})"
    billing.withdraw_tariff(count)
    # `soon` starts within the contract's skew of now (or has started): readings may already be priced by it.
    advance(billing, soon.effective_from - billing.settings.max_future_skew - billing.now() + 1)
    assert refused(billing, lambda: billing.withdraw_tariff(count - 1)).startswith(f"TooSoon({soon.effective_from}, ")
    assert billing.versions()[-1] == soon


def test_the_opening_version_cannot_be_withdrawn(chain: ChainClient, deployment: Deployment, snapshot: None) -> None:
    billing = Billing(chain, deployment)
    count = billing.contract.functions.tariffCount().call()
    if count == 1:
        assert refused(billing, lambda: billing.withdraw_tariff(1)) == "NotNewestVersion(1, 1)"
    else:
        assert refused(billing, lambda: billing.withdraw_tariff(1)) == f"NotNewestVersion(1, {count})"


def test_withdrawing_is_the_operators_alone(billing: Billing) -> None:
    far = TariffVersion.flat(90_000, 80_000, boundary(billing, 30 * DAY))
    billing.set_tariff(far)
    count = billing.contract.functions.tariffCount().call()
    gateway = Account.from_key(billing.settings.gateway_key).address.lower()
    fn = billing.contract.functions
    for call in (fn.withdrawTariff(count), fn.withdrawClockChange(2**31)):
        reason = refused(billing, lambda call=call: billing.client.transact(billing.settings.gateway_key, call))
        assert reason == f"AccessControlUnauthorizedAccount({gateway}, 0x{OPERATOR_ROLE.hex()})"


# ---------------------------------------------------------------- clock changes


def _offsets(billing: Billing, times: list[int]) -> list[int]:
    return [int(billing.contract.functions.clockOffsetAt(t).call()) for t in times]


def test_clock_changes_withdrawn_from_the_last_go_back_to_the_offsets_before_and_can_be_published_again(
    billing: Billing,
) -> None:
    published = uk_clock_changes(*CLOCK_CHANGE_YEARS)
    last = published[-8:]  # four years: withdrawals within a 388-day bucket and ones that opened a bucket
    probes = sorted({t + d for at, _ in last for t in (at, at >> 25 << 25) for d in (-1, 0, 1)} | {2**32 - 1})
    table = ClockTable(tuple(published))
    assert _offsets(billing, probes) == [table.offset_minutes(t) for t in probes]

    assert refused(billing, lambda: billing.withdraw_clock_change(last[-2][0])) == (
        f"NotLastClockChange({last[-2][0]}, {last[-1][0]})")
    for at, minutes in reversed(last):
        receipt = billing.withdraw_clock_change(at)
        assert [dict(e["args"]) for e in billing.events("ClockChangeWithdrawn", receipt)] == [
            {"at": at, "offsetMinutes": minutes}]
        table = table.without(at)
        assert _offsets(billing, probes) == [table.offset_minutes(t) for t in probes], at
    assert billing.schedule().clock == table

    billing.client.transact(billing.settings.operator_key, billing.contract.functions.addClockChanges(last))
    table = ClockTable(tuple(published))
    assert _offsets(billing, probes) == [table.offset_minutes(t) for t in probes]
    assert billing.schedule().clock == table


def test_a_clock_change_within_the_skew_of_now_cannot_be_withdrawn(billing: Billing) -> None:
    last_at = uk_clock_changes(*CLOCK_CHANGE_YEARS)[-1][0]
    advance(billing, last_at - billing.now() - 10)  # the last published change is ten seconds away
    assert refused(billing, lambda: billing.withdraw_clock_change(last_at)).startswith(f"TooSoon({last_at}, ")
