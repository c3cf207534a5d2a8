"""Property tests: the contract bills exactly as ``common.tariff`` says, to the micropence, and
``check_reading`` predicts every rejection the contract emits.

The first test registers a fresh meter and submits random readings (mostly plausible, some
stale, decreasing, implausible, future or badly signed) at the opening flat tariff. The second
moves the chain's clock to a day before a UK clock change (or an ordinary day), schedules random
tariff versions (flat, banded in GMT or clock time, day-ahead with random published prices,
random export rules, random standing charges) from then on, and has several meters report
random readings across the change, submitted many to a transaction; every event, every open
bill and the price of every period of the clock-change day must equal the reference. The
chain's clock goes back after each example (``evm_revert``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

from eth_account import Account
from eth_utils import keccak
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

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
    USES_UP_SEQ,
    ClockTable,
    MeterLedger,
    PriceRule,
    RejectReason,
    Schedule,
    TariffVersion,
    accrue,
    check_reading,
    overflows,
    split,
    standing_charge,
    uk_clock_changes,
)

DAY = 86_400
EVENT_NAMES = ("ReadingRecorded", "ReadingRejected")
_keys = itertools.count()


@dataclass(frozen=True)
class Step:
    """One reading, described relative to the meter's state when it is made."""

    seq_step: int
    timing: str
    elapsed: int
    energy: str
    fraction: int
    good_signature: bool


steps = st.builds(
    Step,
    seq_step=st.sampled_from([1, 1, 1, 1, 1, 1, 2, 0, -1]),
    timing=st.sampled_from(["after"] * 8 + ["same", "earlier", "future"]),
    elapsed=st.integers(1, 7_200),
    energy=st.sampled_from(["plausible"] * 6 + ["at_limit", "over_limit", "decrease"]),
    fraction=st.integers(0, 1_000),
    good_signature=st.sampled_from([True] * 4 + [False]),
)
batches = st.lists(steps, min_size=1, max_size=8)


def _reading_for(step: Step, ledger: MeterLedger, now: int, max_power_w: int) -> tuple[int, int, int, int]:
    """Turn a step into (seq, timestamp, energyWh, exportWh) given the meter's current state."""
    seq = max(0, ledger.last_seq + step.seq_step)
    timestamp = {
        "after": ledger.last_timestamp + step.elapsed,
        "same": ledger.last_timestamp,
        "earlier": ledger.last_timestamp - step.elapsed,
        "future": now + 3_600 + step.elapsed,
    }[step.timing]
    limit = max_power_w * max(0, timestamp - ledger.last_timestamp) // 3_600
    energy = {
        "plausible": ledger.last_energy_wh + limit * step.fraction // 1_000,
        "at_limit": ledger.last_energy_wh + limit,
        "over_limit": ledger.last_energy_wh + limit + 1 + step.fraction,
        "decrease": ledger.last_energy_wh - 1 - step.fraction,
    }[step.energy]
    export = ledger.last_export_wh + limit * (1_000 - step.fraction) // 2_000
    return seq, timestamp, max(0, energy), export


def _logged(billing: Billing, receipt: Any) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in EVENT_NAMES:
        for logged in billing.events(name, receipt):
            args = dict(logged["args"])
            args.pop("record", None)
            found.append((logged["logIndex"], name, args))
    return [(name, args) for _, name, args in sorted(found, key=lambda item: item[0])]


@settings(
    max_examples=20,
    deadline=None,
    database=None,
    # No shrinking: every example costs several Ganache transactions, so shrinking a failure would run
    # for minutes into the pytest timeout. The unshrunk example and the event diff locate the fault.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(opening_wh=st.integers(0, 10**9), first=batches, later=st.lists(batches, max_size=2))
def test_open_bill_equals_the_python_reference_and_check_reading_predicts_every_rejection(
    chain: ChainClient,
    deployment: Deployment,
    base_settings: Settings,
    snapshot: None,
    opening_wh: int,
    first: list[Step],
    later: list[list[Step]],
) -> None:
    billing = Billing(chain, deployment)
    meter = Account.from_key(keccak(b"billing-property-meter-%d" % next(_keys)))
    impostor = Account.from_key(keccak(b"billing-property-impostor"))
    domain = deployment.domain
    now = billing.now()
    opened = now - 30 * DAY
    billing.register_meter(meter.address, b"\x01" * 32, "north", opening_wh, opened)
    ledger = MeterLedger(True, 0, opened, opening_wh)
    schedule = billing.schedule()

    for batch in [first, *later]:
        now = billing.now()
        signed: list[tuple[ReadingData, str]] = []
        expected: list[tuple[str, dict[str, Any]]] = []
        for step in batch:
            seq, timestamp, energy_wh, export_wh = _reading_for(step, ledger, now, base_settings.max_power_w)
            reading = ReadingData(meter.address, seq, timestamp, energy_wh, export_wh)
            signer = meter if step.good_signature else impostor
            signed.append((reading, sign_reading(bytes(signer.key), domain, reading)))
            reason = check_reading(
                ledger, seq, timestamp, energy_wh, export_wh,
                now=now, max_power_w=base_settings.max_power_w, max_future_skew=base_settings.max_future_skew,
            )
            if (reason is RejectReason.NONE or reason in USES_UP_SEQ) and not step.good_signature:
                reason = RejectReason.BAD_SIGNATURE
            if reason is RejectReason.NONE:
                after = accrue(ledger, seq, timestamp, energy_wh, export_wh, schedule)
                if overflows(after):
                    reason = RejectReason.PERIOD_OVERFLOW
            event(f"reading {reason.name.lower()}")
            if reason is RejectReason.NONE:
                ledger = after
                expected.append(_recorded(meter.address, ledger))
            else:
                if reason in USES_UP_SEQ:  # a signed reading refused for its content uses its seq up
                    ledger = replace(ledger, last_seq=seq)
                expected.append(("ReadingRejected", {"meter": meter.address, "seq": seq, "reason": int(reason)}))
        receipt = billing.submit_readings(signed)
        assert _logged(billing, receipt) == expected

    _assert_open_bill(billing, meter.address, opened, opening_wh, 0, ledger, schedule)
    view = billing.meter(meter.address)
    assert (view.last_seq, view.last_timestamp, view.last_energy_wh, view.last_export_wh) == (
        ledger.last_seq, ledger.last_timestamp, ledger.last_energy_wh, ledger.last_export_wh
    )


def _recorded(meter: str, ledger: MeterLedger) -> tuple[str, dict[str, Any]]:
    return ("ReadingRecorded", {
        "meter": meter, "seq": ledger.last_seq, "timestamp": ledger.last_timestamp,
        "energyWh": ledger.last_energy_wh, "exportWh": ledger.last_export_wh,
        "periodImportCost": ledger.period_import_cost, "periodExportCredit": ledger.period_export_credit,
    })


def _assert_open_bill(billing: Billing, meter: str, opened: int, opening_wh: int, opening_export: int,
                      ledger: MeterLedger, schedule: Schedule) -> None:
    standing = standing_charge(schedule.versions, opened, ledger.last_timestamp)
    assert billing.contract.functions.openBill(meter).call() == [
        1, opened, ledger.last_timestamp, ledger.last_energy_wh - opening_wh, ledger.last_export_wh - opening_export,
        ledger.period_import_cost, ledger.period_export_credit, standing,
        ledger.period_import_cost + standing - ledger.period_export_credit,
    ]


# ---------------------------------------------------------------- time of use across clock changes


def _utc(*args: int) -> int:
    import datetime as dt

    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp())


#: 00:00 UTC the day before the spring and autumn changes of 2027, and an ordinary winter day.
ANCHORS = [_utc(2027, 3, 27), _utc(2027, 10, 30), _utc(2027, 1, 20)]
prices = st.integers(0, 100_000)
rules = st.one_of(
    st.builds(PriceRule.flat, prices),
    st.builds(PriceRule.banded, st.lists(st.integers(0, 7), min_size=48, max_size=48),
              st.lists(prices, min_size=8, max_size=8)),
    st.builds(PriceRule.day_ahead, prices),
)
version_specs = st.tuples(rules, rules, st.sampled_from([CLOCK_GMT, CLOCK_LOCAL]), st.integers(0, 100_000),
                          st.integers(1, 96))
meter_steps = st.lists(st.tuples(st.integers(1, 12_000), st.integers(0, 1_000), st.integers(0, 1_000)),
                       min_size=1, max_size=16)


@settings(
    max_examples=8,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    anchor=st.sampled_from(ANCHORS),
    specs=st.lists(version_specs, min_size=1, max_size=3),
    published=st.tuples(st.integers(0, 96), st.lists(prices, min_size=1, max_size=100),
                        st.lists(prices, max_size=100)),
    meters=st.lists(meter_steps, min_size=1, max_size=4),
)
def test_time_of_use_bills_agree_with_the_reference_to_the_micropence_across_clock_changes_and_tariff_changes(
    chain: ChainClient,
    deployment: Deployment,
    base_settings: Settings,
    anchor: int,
    specs: list[tuple[PriceRule, PriceRule, int, int, int]],
    published: tuple[int, list[int], list[int]],
    meters: list[list[tuple[int, int, int]]],
) -> None:
    billing = Billing(chain, deployment)
    rpc = chain.w3.provider.make_request
    snap = rpc("evm_snapshot", [])["result"]  # type: ignore[arg-type]
    try:
        rpc("evm_increaseTime", [anchor - 3 * 3_600 - billing.now()])  # type: ignore[arg-type]
        rpc("evm_mine", [])  # type: ignore[arg-type]
        schedule = Schedule(billing.versions(), ClockTable(tuple(uk_clock_changes(*CLOCK_CHANGE_YEARS))))
        start = anchor
        for import_rule, export_rule, clock, standing, gap in specs:
            if import_rule.kind != BANDED and import_rule.rate == 0:
                import_rule = PriceRule(import_rule.kind, 1, import_rule.bands, import_rule.band_rates)
            version = TariffVersion(start, standing, import_rule, export_rule, clock)
            billing.set_tariff(version)
            schedule.add_version(version)
            event(f"import {import_rule.kind}, export {export_rule.kind}, clock {clock}")
            start += gap * PERIOD_SECONDS
        skip, import_prices, export_prices = published
        export_prices = export_prices[:len(import_prices)] if len(export_prices) >= len(import_prices) else []
        first = anchor + skip * PERIOD_SECONDS
        billing.publish_day_ahead(first, import_prices, export_prices)
        schedule.publish(first // PERIOD_SECONDS, import_prices, export_prices)
        rpc("evm_increaseTime", [anchor + 3 * DAY - billing.now()])  # type: ignore[arg-type]
        rpc("evm_mine", [])  # type: ignore[arg-type]

        opened = anchor - 6 * 3_600
        accounts = [Account.from_key(keccak(b"tou-property-meter-%d" % next(_keys))) for _ in meters]
        billing.register_meters([(a.address, b"\x02" * 32, "north", 5_000) for a in accounts], opened_at=opened)
        ledgers = {a.address: MeterLedger(True, 0, opened, 5_000) for a in accounts}
        per_meter: list[list[tuple[ReadingData, str]]] = []
        expected: dict[str, list[dict[str, Any]]] = {}
        for account, steps_of in zip(accounts, meters, strict=True):
            ledger, signed = ledgers[account.address], []
            for elapsed, import_share, export_share in steps_of:
                limit = base_settings.max_power_w * elapsed // 3_600
                reading = ReadingData(account.address, ledger.last_seq + 1, ledger.last_timestamp + elapsed,
                                      ledger.last_energy_wh + limit * import_share // 1_000,
                                      ledger.last_export_wh + limit * export_share // 1_000)
                d_import = reading.energy_wh - ledger.last_energy_wh
                assert sum(wh for _, wh in split(ledger.last_timestamp, reading.timestamp, d_import)) == d_import
                ledger = accrue(ledger, reading.seq, reading.timestamp, reading.energy_wh, reading.export_wh, schedule)
                expected.setdefault(account.address, []).append(_recorded(account.address, ledger)[1])
                signed.append((reading, sign_reading(bytes(account.key), deployment.domain, reading)))
            ledgers[account.address] = ledger
            per_meter.append(signed)
        # Interleave the meters' readings (each meter's in order) and send them many to a transaction.
        interleaved = [r for round_ in itertools.zip_longest(*per_meter) for r in round_ if r is not None]
        found: dict[str, list[dict[str, Any]]] = {}
        for i in range(0, len(interleaved), 100):
            receipt = billing.submit_readings(interleaved[i:i + 100])
            for name, args in _logged(billing, receipt):
                assert name == "ReadingRecorded", args
                found.setdefault(args["meter"], []).append(args)
        for account in accounts:
            assert found[account.address] == expected[account.address]
            _assert_open_bill(billing, account.address, opened, 5_000, 0, ledgers[account.address], schedule)
        # Every period of the clock-change day is priced as the reference prices it.
        day = anchor + DAY
        for p in range(day // PERIOD_SECONDS, day // PERIOD_SECONDS + 48):
            assert tuple(billing.contract.functions.pricesAt(p * PERIOD_SECONDS).call()) == schedule.prices(p), p
    finally:
        rpc("evm_revert", [snap])  # type: ignore[arg-type]
        chain._nonces.clear()
