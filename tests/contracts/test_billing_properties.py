"""Property test: the contract bills exactly as ``common.tariff`` says, and ``check_reading``
predicts every rejection the contract emits.

Each example registers a fresh meter, then submits random readings (mostly plausible, some stale,
decreasing, implausible, future, out of range or badly signed) in one batch per tariff, with
random tariff changes between batches. The Python reference is replayed alongside.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_utils import keccak
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from common.billing import Billing
from common.chain import ChainClient
from common.deployment import Deployment
from common.eip712 import ReadingData, sign_reading
from common.settings import Settings
from common.tariff import MeterLedger, RejectReason, Tariff, accrue, check_reading, overflows

DAY = 86_400
EVENT_NAMES = ("ReadingRecorded", "ReadingRejected", "BillUpdated")
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
    energy=st.sampled_from(["plausible"] * 6 + ["at_limit", "over_limit", "decrease", "out_of_range"]),
    fraction=st.integers(0, 1_000),
    good_signature=st.sampled_from([True] * 4 + [False]),
)
batches = st.lists(steps, min_size=1, max_size=8)
tariffs = st.tuples(st.integers(1, 100_000), st.integers(0, 200_000))


def _reading_for(step: Step, ledger: MeterLedger, now: int, max_power_w: int) -> tuple[int, int, int]:
    """Turn a step into (seq, timestamp, energyWh) given the meter's current state."""
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
        "out_of_range": 2**48 + step.fraction,
    }[step.energy]
    return seq, timestamp, max(0, energy)


def _logged(billing: Billing, receipt: Any) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in EVENT_NAMES:
        for logged in billing.events(name, receipt):
            found.append((logged["logIndex"], name, dict(logged["args"])))
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
@given(
    opening_wh=st.integers(0, 10**9),
    first=batches,
    later=st.lists(st.tuples(tariffs, batches), max_size=2),
)
def test_open_bill_equals_the_python_reference_and_check_reading_predicts_every_rejection(
    chain: ChainClient,
    deployment: Deployment,
    base_settings: Settings,
    snapshot: None,
    opening_wh: int,
    first: list[Step],
    later: list[tuple[tuple[int, int], list[Step]]],
) -> None:
    billing = Billing(chain, deployment)
    meter = Account.from_key(keccak(b"billing-property-meter-%d" % next(_keys)))
    impostor = Account.from_key(keccak(b"billing-property-impostor"))
    domain = deployment.domain
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    opened = now - 30 * DAY
    billing.register_meter(meter.address, b"\x01" * 32, "north", opening_wh, opened)
    ledger = MeterLedger(True, 0, opened, opening_wh)
    info = billing.tariff()
    tariff = Tariff(info.unit_rate, info.standing_charge)

    for change, batch in [(None, first), *later]:
        if change is not None:
            billing.set_tariff(*change)
            tariff = Tariff(*change)
        now = int(chain.w3.eth.get_block("latest")["timestamp"])
        signed: list[tuple[ReadingData, str]] = []
        expected: list[tuple[str, dict[str, Any]]] = []
        for step in batch:
            seq, timestamp, energy_wh = _reading_for(step, ledger, now, base_settings.max_power_w)
            reading = ReadingData(meter.address, seq, timestamp, energy_wh)
            signer = meter if step.good_signature else impostor
            signed.append((reading, sign_reading(bytes(signer.key), domain, reading)))
            reason = check_reading(
                ledger, seq, timestamp, energy_wh,
                now=now, max_power_w=base_settings.max_power_w, max_future_skew=base_settings.max_future_skew,
            )
            if reason is RejectReason.NONE and not step.good_signature:
                reason = RejectReason.BAD_SIGNATURE
            if reason is RejectReason.NONE:
                after = accrue(ledger, seq, timestamp, energy_wh, tariff)
                if overflows(after):
                    reason = RejectReason.PERIOD_OVERFLOW
            event(f"reading {reason.name.lower()}")
            if reason is RejectReason.NONE:
                ledger = after
                expected.append(
                    (
                        "ReadingRecorded",
                        {"meter": meter.address, "seq": seq, "timestamp": timestamp, "energyWh": energy_wh},
                    )
                )
                expected.append(
                    (
                        "BillUpdated",
                        {
                            "meter": meter.address,
                            "seq": seq,
                            "periodEnergyWh": ledger.period_energy_wh,
                            "amountDue": ledger.amount_due,
                        },
                    )
                )
            else:
                expected.append(("ReadingRejected", {"meter": meter.address, "seq": seq, "reason": int(reason)}))
        receipt = billing.submit_readings(signed)
        assert _logged(billing, receipt) == expected

    assert billing.contract.functions.openBill(meter.address).call() == [
        1,
        opened,
        ledger.last_timestamp,
        ledger.period_energy_wh,
        ledger.period_energy_cost,
        ledger.period_standing_charge,
        ledger.amount_due,
    ]
    view = billing.meter(meter.address)
    assert (view.last_seq, view.last_timestamp, view.last_energy_wh) == (
        ledger.last_seq, ledger.last_timestamp, ledger.last_energy_wh
    )
