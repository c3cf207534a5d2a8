"""Replay a recorded sensor CSV of (timestamp, kWh) rows as cumulative meter register readings.

The file format is two columns, ``timestamp,kWh``, one reading a row, oldest first:

* an optional header on the first line (a first line whose two cells are neither a timestamp
  nor a number); blank lines are skipped and any columns after the second are ignored;
* the timestamp is unix seconds (``1700000000`` or ``1700000000.5``) or ISO 8601
  (``2024-01-15T07:30:00Z``, ``2024-01-15 07:30:00+00:00``; without an offset it is UTC),
  each at least one second after the one before;
* the kWh value is either the energy used in the interval ending at that row, or a cumulative
  register reading. ``detect_mode`` decides which unless the caller says.
"""

from __future__ import annotations

import copy
import csv
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from pathlib import Path
from typing import Literal

from common.tariff import Wh

__all__ = ["CsvSource", "CsvMode", "detect_mode", "MIN_ROW_SPACING_S"]

CsvMode = Literal["auto", "interval", "cumulative"]
WH_PER_KWH = Decimal(1_000)
#: Rows must be at least a second apart, so whole-second timestamps stay strictly increasing.
MIN_ROW_SPACING_S = 1.0


@dataclass(frozen=True)
class _Row:
    """One parsed row: unix time, the kWh value exactly as written, and its line in the file."""

    timestamp: float
    kwh: Decimal
    line: int


def detect_mode(values: Sequence[Decimal]) -> Literal["interval", "cumulative"]:
    """Decide whether kWh values are per-interval consumption or a cumulative register.

    The values are cumulative when they never decrease and the total rise (last minus first)
    is larger than the largest single step between consecutive rows, i.e. the series climbs
    steadily over several rows rather than in one jump; otherwise they are per-interval. A
    per-interval file whose values happen never to fall (short files are most at risk) is
    misread as cumulative: pass ``mode="interval"`` to ``CsvSource`` for such files.
    """
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    if not steps or min(steps) < 0:
        return "interval"
    return "cumulative" if values[-1] - values[0] > max(steps) else "interval"


def _parse_timestamp(text: str) -> float | None:
    """Unix seconds from a unix-seconds or ISO 8601 cell, or None if it is neither."""
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return value if math.isfinite(value) else None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _parse_kwh(text: str) -> Decimal | None:
    """The exact decimal value of a kWh cell, or None if it is not a finite number."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _read_rows(path: Path) -> list[_Row]:
    """Parse and check every row of the file; the first line may be a header."""
    rows: list[_Row] = []
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise ValueError(f"{path}: cannot read the CSV file: {err.strerror or err}") from err
    with handle:
        reader = csv.reader(handle)
        first = True
        for cells in reader:
            line = reader.line_num
            cells = [cell.strip() for cell in cells]
            if not any(cells):
                continue
            is_first, first = first, False
            if len(cells) < 2:
                raise ValueError(f"{path}:{line}: expected two columns, timestamp,kWh; got {','.join(cells)!r}")
            timestamp, kwh = _parse_timestamp(cells[0]), _parse_kwh(cells[1])
            if is_first and timestamp is None and kwh is None:
                continue  # a header
            if timestamp is None:
                raise ValueError(f"{path}:{line}: timestamp {cells[0]!r} is neither unix seconds nor ISO 8601")
            if kwh is None:
                raise ValueError(f"{path}:{line}: kWh value {cells[1]!r} is not a number")
            if kwh < 0:
                raise ValueError(f"{path}:{line}: kWh value {cells[1]!r} is negative; exported energy is not supported")
            if rows and timestamp - rows[-1].timestamp < MIN_ROW_SPACING_S:
                raise ValueError(
                    f"{path}:{line}: timestamp {cells[0]!r} is not at least {MIN_ROW_SPACING_S:g} s "
                    f"after the previous row (line {rows[-1].line}); rows must be in time order"
                )
            rows.append(_Row(timestamp, kwh, line))
    if not rows:
        raise ValueError(f"{path}: the CSV file has no readings")
    return rows


class CsvSource:
    """A recorded CSV replayed as (timestamp, register Wh) readings, oldest first.

    The whole file is read and checked on construction. The register starts from ``start_wh``
    and never decreases: in interval mode each row adds its kWh (so the first reading already
    includes the first row); in cumulative mode each reading is ``start_wh`` plus the rise
    since the first row. Energy is summed exactly and floored to whole Wh, so no energy is
    lost to rounding. Replayed readings need current timestamps: ``retime`` shifts them.

    Raises:
        ValueError: naming the file and line, for an unreadable file, a malformed row, rows out
            of time order, or (in cumulative mode) a value lower than the row before.
    """

    def __init__(self, path: str | os.PathLike[str], *, start_wh: int = 0, mode: CsvMode = "auto") -> None:
        if mode not in ("auto", "interval", "cumulative"):
            raise ValueError(f"mode must be 'auto', 'interval' or 'cumulative', got {mode!r}")
        if start_wh < 0:
            raise ValueError(f"start_wh must be >= 0, got {start_wh}")
        self.path = Path(path)
        self.start_wh = start_wh
        self._rows = _read_rows(self.path)
        values = [row.kwh for row in self._rows]
        self.mode: Literal["interval", "cumulative"] = detect_mode(values) if mode == "auto" else mode
        self._registers = self._register_values()
        self._start: float | None = None

    def _register_values(self) -> tuple[Wh, ...]:
        """The register at each row, from exact decimal energy floored to whole Wh."""
        registers = []
        total = Decimal(0)
        previous = self._rows[0]
        for row in self._rows:
            if self.mode == "interval":
                total += row.kwh
            else:
                if row.kwh < previous.kwh:
                    raise ValueError(
                        f"{self.path}:{row.line}: cumulative kWh went down from {previous.kwh} (line "
                        f"{previous.line}) to {row.kwh}; pass mode='interval' if the file holds per-interval use"
                    )
                total = row.kwh - self._rows[0].kwh
                previous = row
            wh = int((total * WH_PER_KWH).to_integral_value(rounding=ROUND_FLOOR))
            registers.append(Wh(self.start_wh + wh))
        return tuple(registers)

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[tuple[int, Wh]]:
        """Yield (unix seconds, register Wh) for each row, oldest first."""
        for row, register in zip(self._rows, self._registers, strict=True):
            yield self._timestamp(row), register

    def readings(self) -> list[tuple[int, Wh]]:
        """All (unix seconds, register Wh) readings as a list."""
        return list(self)

    @property
    def start_time(self) -> int:
        """Timestamp of the first reading, after any ``retime``."""
        return self._timestamp(self._rows[0])

    @property
    def duration_s(self) -> float:
        """Seconds from the first row to the last."""
        return self._rows[-1].timestamp - self._rows[0].timestamp

    def retime(self, start: float) -> CsvSource:
        """A copy whose timestamps are shifted so the first reading is at ``start``; spacing is kept."""
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite unix time, got {start!r}")
        shifted = copy.copy(self)
        shifted._start = float(start)
        return shifted

    def _timestamp(self, row: _Row) -> int:
        """A row's whole-second timestamp, re-timed if ``retime`` was used."""
        if self._start is None:
            return math.floor(row.timestamp)
        # Offsets from the first row, added to the new start, keep the first reading exactly at it.
        return math.floor(self._start + (row.timestamp - self._rows[0].timestamp))
