"""Off-chain checks of a reading: the contract's rules, applied before the gateway pays gas.

Pure functions, no I/O. The gateway keeps a ``Cursor`` per meter (the last reading it
accepted, queued or on chain) and checks each new reading against it, so a bad reading gets
an ``error`` at once instead of a ``ReadingRejected`` event later.
"""

from __future__ import annotations

from dataclasses import dataclass

from common import errors
from common.eip712 import ReadingData, recover_reading_signer
from common.messages import Reading
from common.tariff import MAX_REGISTER_WH, MAX_SEQ, MAX_TIMESTAMP

__all__ = ["Cursor", "Limits", "validate_reading"]


@dataclass(frozen=True)
class Cursor:
    """The last reading of a meter the gateway accepted (or the chain's state before any)."""

    seq: int
    timestamp: int
    energy_wh: int


@dataclass(frozen=True)
class Limits:
    """The contract's limits, mirrored off chain."""

    max_power_w: int
    max_future_skew: int


def validate_reading(
    reading: Reading,
    session_meter: str,
    cursor: Cursor,
    *,
    now: int,
    domain_separator: bytes,
    limits: Limits,
) -> ReadingData:
    """Check a reading against the cursor; return its signed data or raise a ReadingError.

    Checks run cheapest first: the meter, ranges, sequence (a gap asks the meter to send the
    missing readings first), timestamps, register, power, then the signature.
    """
    seq = reading.seq
    if reading.meter.lower() != session_meter.lower():
        raise errors.WrongMeter(f"this connection is logged in as {session_meter}, not {reading.meter}", seq=seq)
    if seq > MAX_SEQ or reading.timestamp > MAX_TIMESTAMP or reading.energy_wh > MAX_REGISTER_WH:
        raise errors.OutOfRange("seq and timestamp must fit 32 bits and energyWh 48 bits", seq=seq)
    if seq <= cursor.seq:
        raise errors.StaleSequence(f"seq {seq} is not above the last accepted seq {cursor.seq}", seq=seq)
    if seq != cursor.seq + 1:
        raise errors.SequenceGap(f"seq {seq} skips from {cursor.seq}; send seq {cursor.seq + 1} first", seq=seq)
    if reading.timestamp <= cursor.timestamp:
        raise errors.StaleTimestamp(
            f"timestamp {reading.timestamp} is not after the previous reading's {cursor.timestamp}", seq=seq
        )
    if reading.timestamp > now + limits.max_future_skew:
        raise errors.FutureTimestamp(
            f"timestamp {reading.timestamp} is {reading.timestamp - now} s ahead of the server clock", seq=seq
        )
    if reading.energy_wh < cursor.energy_wh:
        raise errors.RegisterDecreased(
            f"register {reading.energy_wh} Wh is below the previous {cursor.energy_wh} Wh", seq=seq
        )
    delta = reading.energy_wh - cursor.energy_wh
    elapsed = reading.timestamp - cursor.timestamp
    if delta * 3600 > limits.max_power_w * elapsed:
        raise errors.ImplausibleDelta(
            f"{delta} Wh in {elapsed} s is an average of {delta * 3600 // max(elapsed, 1)} W, "
            f"above the {limits.max_power_w} W supply limit",
            seq=seq,
        )
    data = ReadingData(reading.meter, seq, reading.timestamp, reading.energy_wh)
    signer = recover_reading_signer(domain_separator, data, reading.signature)
    if signer is None or signer.lower() != reading.meter.lower():
        raise errors.BadSignature("the signature does not recover to the reading's meter", seq=seq)
    return data
