"""The bill arithmetic in Python: the reference the contract is tested against.

Units match the contract: energy in Wh, tariff rates in millipence per kWh and per day,
accrued amounts in micropence. Energy cost is exact; the standing charge for the time between
two readings is rounded down to the micropence, once per reading, exactly as on chain.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import NewType

from common import errors

__all__ = [
    "Wh",
    "Micropence",
    "RejectReason",
    "Tariff",
    "MeterLedger",
    "accrue",
    "check_reading",
    "format_pounds",
    "REJECT_ERRORS",
    "MAX_SEQ",
    "MAX_TIMESTAMP",
    "MAX_REGISTER_WH",
]

Wh = NewType("Wh", int)
Micropence = NewType("Micropence", int)

SECONDS_PER_DAY = 86_400
MICRO_PER_MILLI = 1_000
MAX_SEQ = 2**32 - 1
MAX_TIMESTAMP = 2**32 - 1
MAX_REGISTER_WH = 2**48 - 1
MAX_PERIOD_ENERGY_COST = 2**48 - 1
MAX_PERIOD_STANDING = 2**40 - 1


class RejectReason(enum.IntEnum):
    """Why the contract rejected a reading; the values are the contract's enum."""

    NONE = 0
    BAD_SIGNATURE = 1
    METER_NOT_ACTIVE = 2
    STALE_SEQUENCE = 3
    STALE_TIMESTAMP = 4
    FUTURE_TIMESTAMP = 5
    REGISTER_DECREASED = 6
    IMPLAUSIBLE_DELTA = 7
    OUT_OF_RANGE = 8
    PERIOD_OVERFLOW = 9


REJECT_ERRORS: dict[RejectReason, type[errors.SmartMeterError]] = {
    RejectReason.BAD_SIGNATURE: errors.BadSignature,
    RejectReason.METER_NOT_ACTIVE: errors.MeterInactive,
    RejectReason.STALE_SEQUENCE: errors.StaleSequence,
    RejectReason.STALE_TIMESTAMP: errors.StaleTimestamp,
    RejectReason.FUTURE_TIMESTAMP: errors.FutureTimestamp,
    RejectReason.REGISTER_DECREASED: errors.RegisterDecreased,
    RejectReason.IMPLAUSIBLE_DELTA: errors.ImplausibleDelta,
    RejectReason.OUT_OF_RANGE: errors.OutOfRange,
    RejectReason.PERIOD_OVERFLOW: errors.PeriodOverflow,
}


@dataclass(frozen=True)
class Tariff:
    """A tariff: unit rate in millipence per kWh, standing charge in millipence per day."""

    unit_rate: int
    standing_charge: int


@dataclass(frozen=True)
class MeterLedger:
    """What the contract keeps per meter for checking and billing readings."""

    active: bool
    last_seq: int
    last_timestamp: int
    last_energy_wh: int
    period_energy_wh: int = 0
    period_energy_cost: int = 0
    period_standing_charge: int = 0

    @property
    def amount_due(self) -> int:
        """Energy cost plus standing charge of the open period, in micropence."""
        return self.period_energy_cost + self.period_standing_charge


def check_reading(
    ledger: MeterLedger,
    seq: int,
    timestamp: int,
    energy_wh: int,
    *,
    now: int,
    max_power_w: int,
    max_future_skew: int,
) -> RejectReason:
    """Apply the contract's checks (all but the signature) in the contract's order."""
    if not ledger.active:
        return RejectReason.METER_NOT_ACTIVE
    if seq > MAX_SEQ or timestamp > MAX_TIMESTAMP or energy_wh > MAX_REGISTER_WH:
        return RejectReason.OUT_OF_RANGE
    if seq <= ledger.last_seq:
        return RejectReason.STALE_SEQUENCE
    if timestamp <= ledger.last_timestamp:
        return RejectReason.STALE_TIMESTAMP
    if timestamp > now + max_future_skew:
        return RejectReason.FUTURE_TIMESTAMP
    if energy_wh < ledger.last_energy_wh:
        return RejectReason.REGISTER_DECREASED
    if (energy_wh - ledger.last_energy_wh) * 3600 > max_power_w * (timestamp - ledger.last_timestamp):
        return RejectReason.IMPLAUSIBLE_DELTA
    return RejectReason.NONE


def accrue(ledger: MeterLedger, seq: int, timestamp: int, energy_wh: int, tariff: Tariff) -> MeterLedger:
    """Return the ledger after recording an already-checked reading at ``tariff``."""
    elapsed = timestamp - ledger.last_timestamp
    delta = energy_wh - ledger.last_energy_wh
    energy_cost = ledger.period_energy_cost + delta * tariff.unit_rate
    standing = ledger.period_standing_charge + (elapsed * tariff.standing_charge * MICRO_PER_MILLI) // SECONDS_PER_DAY
    return replace(
        ledger,
        last_seq=seq,
        last_timestamp=timestamp,
        last_energy_wh=energy_wh,
        period_energy_wh=ledger.period_energy_wh + delta,
        period_energy_cost=energy_cost,
        period_standing_charge=standing,
    )


def overflows(ledger: MeterLedger) -> bool:
    """Whether an accrued ledger no longer fits the contract's packed fields."""
    return (
        ledger.period_energy_cost > MAX_PERIOD_ENERGY_COST
        or ledger.period_standing_charge > MAX_PERIOD_STANDING
        or ledger.period_energy_wh > MAX_REGISTER_WH
    )


def format_pounds(micropence: int) -> str:
    """Format an amount in micropence as pounds and pence (half a penny rounds up)."""
    pence = (micropence + 500_000) // 1_000_000
    return f"£{pence // 100:,}.{pence % 100:02d}"
