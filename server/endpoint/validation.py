"""Off-chain checks of a reading: the contract's rules, applied before the gateway pays gas.

Pure functions, no I/O. The gateway keeps a ``Cursor`` per meter (the last seq it used up and
the last reading it accepted, queued or on chain) and checks each new reading against it, so a
bad reading gets an ``error`` at once instead of a ``ReadingRejected`` event later.
"""

from __future__ import annotations

from dataclasses import dataclass

from common import errors
from common.eip712 import ReadingData, recover_reading_signer
from common.messages import Reading
from common.tariff import REJECT_ERRORS, MeterLedger, RejectReason, check_reading

__all__ = ["Cursor", "Limits", "validate_reading"]


@dataclass(frozen=True)
class Cursor:
    """Where a meter stands at the gateway (or the chain's state before any reading reached it).

    ``seq`` is the last seq used up, by a reading accepted or one refused for its content;
    ``timestamp``, ``energy_wh`` (import) and ``export_wh`` are those of the last reading accepted.
    """

    seq: int
    timestamp: int
    energy_wh: int
    export_wh: int = 0


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

    The contract's rules come from ``common.tariff.check_reading`` (one definition, also the
    reference the contract is tested against); the gateway adds two of its own: the reading
    must name the logged-in meter, and its seq must be the next one (a gap asks the meter to
    send the missing readings first). The signature is checked after the checks on numbers, being
    the dearest, and before a refusal for the reading's content: such a refusal uses the seq up (on
    chain too), which only the meter's own signature may do.
    """
    seq = reading.seq
    if reading.meter.lower() != session_meter.lower():
        raise errors.WrongMeter(f"this connection is logged in as {session_meter}, not {reading.meter}", seq=seq)
    ledger = MeterLedger(True, cursor.seq, cursor.timestamp, cursor.energy_wh, cursor.export_wh)
    reason = check_reading(ledger, seq, reading.timestamp, reading.energy_wh, reading.export_wh, now=now,
                           max_power_w=limits.max_power_w, max_future_skew=limits.max_future_skew)
    if reason is RejectReason.OUT_OF_RANGE or reason is RejectReason.STALE_SEQUENCE:
        raise _refusal(reason, reading, cursor, now, limits)
    if seq != cursor.seq + 1:
        raise errors.SequenceGap(f"seq {seq} skips from {cursor.seq}; send seq {cursor.seq + 1} first", seq=seq)
    data = ReadingData(reading.meter, seq, reading.timestamp, reading.energy_wh, reading.export_wh)
    signer = recover_reading_signer(domain_separator, data, reading.signature)
    if signer is None or signer.lower() != reading.meter.lower():
        raise errors.BadSignature("the signature does not recover to the reading's meter", seq=seq)
    if reason is not RejectReason.NONE:
        raise _refusal(reason, reading, cursor, now, limits)
    return data


def _refusal(reason: RejectReason, reading: Reading, cursor: Cursor, now: int,
             limits: Limits) -> errors.SmartMeterError:
    """The error for a rule ``check_reading`` found broken, with a sentence giving the figures."""
    seq, ts, wh = reading.seq, reading.timestamp, reading.energy_wh
    # The register that broke the rule: import, unless only export did.
    if wh >= cursor.energy_wh and (reading.export_wh < cursor.export_wh
                                   or reading.export_wh - cursor.export_wh > wh - cursor.energy_wh):
        name, wh, last = "export register", reading.export_wh, cursor.export_wh
    else:
        name, last = "register", cursor.energy_wh
    delta, elapsed = wh - last, ts - cursor.timestamp
    message = {
        RejectReason.OUT_OF_RANGE: "seq and timestamp must fit 32 bits and energyWh and exportWh 48 bits",
        RejectReason.STALE_SEQUENCE: f"seq {seq} is used up: the last seq used is {cursor.seq} (by a reading "
                                     f"accepted, or refused for its content); the next free seq is {cursor.seq + 1}",
        RejectReason.STALE_TIMESTAMP: f"timestamp {ts} is not after the previous reading's {cursor.timestamp}",
        RejectReason.FUTURE_TIMESTAMP: f"timestamp {ts} is {ts - now} s ahead of the server clock",
        RejectReason.REGISTER_DECREASED: f"{name} {wh} Wh is below the previous {last} Wh",
        RejectReason.IMPLAUSIBLE_DELTA: f"{name} {delta} Wh in {elapsed} s is an average of "
                                        f"{delta * 3600 // max(elapsed, 1)} W, above the {limits.max_power_w} W "
                                        "supply limit",
    }.get(reason)
    return REJECT_ERRORS[reason](message, seq=seq)
