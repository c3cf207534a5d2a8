"""Where a meter's register values come from: the household load model, or a replayed CSV."""

from __future__ import annotations

import bisect
from typing import Protocol

from meters.csv_source import CsvSource
from meters.load_model import LoadModel, Register

__all__ = ["RegisterSource", "ModelSource", "CsvReplaySource"]


class RegisterSource(Protocol):
    """Gives the cumulative register (Wh) at a unix time; never goes down."""

    def register_at(self, t: float) -> int:
        """The register value at time ``t`` (t never goes backwards between calls)."""

    def restart(self, t: float, wh: int) -> None:
        """Continue from a known point (after provisioning, a restart or adopting the chain's state)."""


class ModelSource:
    """A register driven by the household load model."""

    def __init__(self, model: LoadModel, t: float, wh: int) -> None:
        self.model = model
        self.register = Register(model, t, wh)

    def register_at(self, t: float) -> int:
        """Advance the register to ``t``."""
        return int(self.register.advance(max(t, self.register.time)))

    def restart(self, t: float, wh: int) -> None:
        """Start a new register at (t, wh)."""
        self.register = Register(self.model, t, wh)


class CsvReplaySource:
    """A recorded CSV replayed from now on: the register follows the file's rows as time passes.

    Row times are shifted so the first row is at the moment replay starts; the register at any
    time is the last row's value at or before it, on top of the meter's own register, so power
    stays what the sensor recorded. After the last row the register stays where the file ended.
    """

    def __init__(self, csv: CsvSource, t: float, wh: int) -> None:
        self.csv = csv
        self.restart(t, wh)

    def register_at(self, t: float) -> int:
        """The register at ``t`` from the retimed rows."""
        i = bisect.bisect_right(self._times, t) - 1
        if i < 0:
            return self._base
        return self._base + int(self._values[i]) - int(self._values[0])

    def restart(self, t: float, wh: int) -> None:
        """Replay the file from ``t`` on top of register ``wh``."""
        rows = self.csv.retime(t).readings()
        self._times = [ts for ts, _ in rows]
        self._values = [v for _, v in rows]
        self._base = wh
