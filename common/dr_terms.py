"""A demand-response event's terms and the rule its status follows: pure, shared by server, meters and tools.

The status is OpenADR 2.0b's eiEventStatus, derived from the time exactly as the DemandResponse
contract's ``statusOf`` derives it from the block's: cancelled; else completed from the end; active
from the start; near within the ramp-up before the start; far before that.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Status", "Signal", "Terms", "status_at"]


class Status(enum.IntEnum):
    """An event's status (OpenADR 2.0b's eiEventStatus), as the contract derives it from the time."""

    FAR = 0
    NEAR = 1
    ACTIVE = 2
    COMPLETED = 3
    CANCELLED = 4


class Signal(enum.IntEnum):
    """What an event's signal value means: a level 0-3, or a price in millipence per kWh."""

    LEVEL = 0
    PRICE = 1


@dataclass(frozen=True)
class Terms:
    """When an event runs, what it signals and what it pays (millipence per kWh of reduction)."""

    start: int
    duration: int
    ramp_up: int
    signal_kind: Signal
    signal_value: int
    credit_rate: int

    @property
    def end(self) -> int:
        """When the active period ends."""
        return self.start + self.duration

    def as_struct(self) -> tuple[int, int, int, int, int, int]:
        """The contract's ``Terms`` tuple."""
        return (self.start, self.duration, self.ramp_up, int(self.signal_kind), self.signal_value, self.credit_rate)

    @classmethod
    def from_struct(cls, raw: Sequence[Any]) -> Terms:
        """Terms from the contract's tuple."""
        start, duration, ramp_up, kind, value, rate = raw
        return cls(int(start), int(duration), int(ramp_up), Signal(int(kind)), int(value), int(rate))


def status_at(terms: Terms, cancelled: bool, now: float) -> Status:
    """An event's status at unix time ``now`` (the contract's ``statusOf`` at a block of that time)."""
    if cancelled:
        return Status.CANCELLED
    if now >= terms.end:
        return Status.COMPLETED
    if now >= terms.start:
        return Status.ACTIVE
    if now + terms.ramp_up >= terms.start:
        return Status.NEAR
    return Status.FAR
