"""Where a meter's register values come from: the household model (demand, solar, battery), or a
replayed CSV (import only)."""

from __future__ import annotations

import bisect
from typing import Protocol

from meters.csv_source import CsvSource
from meters.household import Household, Registers
from meters.load_model import LoadModel

__all__ = ["RegisterSource", "ModelSource", "CsvReplaySource"]


class RegisterSource(Protocol):
    """Gives the cumulative import and export registers (Wh) at a unix time; they never go down."""

    def register_at(self, t: float) -> int:
        """The import register at time ``t`` (t never goes backwards between calls)."""

    def export_at(self, t: float) -> int:
        """The export register at time ``t`` (after ``register_at`` for the same time)."""

    def restart(self, t: float, wh: int, export_wh: int = 0) -> None:
        """Continue from a known point (after provisioning, a restart or adopting the chain's state)."""


class ModelSource:
    """Registers driven by the household model; ``model`` is its demand (for the +/- control and
    demand response)."""

    def __init__(self, household: Household | LoadModel, t: float, wh: int, export_wh: int = 0) -> None:
        if isinstance(household, LoadModel):  # demand alone: a home without panels or a battery
            household = Household(household)
        self.household = household
        self.model = household.load
        self.registers = Registers(household, t, wh, export_wh)

    def register_at(self, t: float) -> int:
        """Advance the registers to ``t``; the import register."""
        return self.registers.advance(max(t, self.registers.time))[0]

    def export_at(self, t: float) -> int:
        """Advance the registers to ``t``; the export register."""
        return self.registers.advance(max(t, self.registers.time))[1]

    def restart(self, t: float, wh: int, export_wh: int = 0) -> None:
        """Start new registers at (t, wh, export_wh)."""
        self.registers = Registers(self.household, t, wh, export_wh)


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

    def export_at(self, t: float) -> int:
        """A recorded import file carries no export: the export register stays where it was."""
        return self._export

    def restart(self, t: float, wh: int, export_wh: int = 0) -> None:
        """Replay the file from ``t`` on top of register ``wh``."""
        self._export = export_wh
        rows = self.csv.retime(t).readings()
        self._times = [ts for ts, _ in rows]
        self._values = [v for _, v in rows]
        self._base = wh
