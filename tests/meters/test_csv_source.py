"""Tests for meters.csv_source: replaying interval and cumulative sensor CSVs as register readings."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from meters.csv_source import CsvSource, detect_mode


def write(tmp_path: Path, text: str, name: str = "sensor.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_an_interval_file_with_unix_timestamps_and_no_header_sums_each_row(tmp_path: Path) -> None:
    path = write(tmp_path, "1700000000,0.25\n1700001800,0.5\n1700003600,0.125\n1700005400,0.4\n")
    source = CsvSource(path, start_wh=1_000)
    assert source.mode == "interval"
    assert source.readings() == [(1700000000, 1250), (1700001800, 1750), (1700003600, 1875), (1700005400, 2275)]


def test_a_cumulative_file_with_iso_timestamps_and_a_header_reads_the_rise(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timestamp,kwh\n"
        "2024-01-15T00:00:00Z,1523.100\n"
        "2024-01-15T00:30:00Z,1523.350\n"
        "2024-01-15T01:00:00Z,1523.500\n"
        "2024-01-15T01:30:00Z,1524.001\n",
    )
    source = CsvSource(path, start_wh=10)
    assert source.mode == "cumulative"
    assert source.readings() == [(1705276800, 10), (1705278600, 260), (1705280400, 410), (1705282200, 911)]


def test_an_interval_file_with_iso_timestamps_and_a_header(tmp_path: Path) -> None:
    path = write(tmp_path, "time,energy_kwh\n2024-01-15 00:30:00,0.3\n2024-01-15 01:00:00+00:00,0.2\n")
    source = CsvSource(path)
    assert source.mode == "interval"
    assert source.readings() == [(1705278600, 300), (1705280400, 500)]


def test_a_cumulative_file_with_unix_timestamps_and_no_header(tmp_path: Path) -> None:
    path = write(tmp_path, "1700000000,0\n1700000060,0.010\n1700000120,0.025\n1700000180,0.030\n")
    source = CsvSource(path)
    assert source.mode == "cumulative"
    assert [wh for _, wh in source] == [0, 10, 25, 30]


def test_fractions_of_a_wh_are_carried_not_lost(tmp_path: Path) -> None:
    rows = "".join(f"{1700000000 + 60 * k},0.0003\n" for k in range(10))
    source = CsvSource(write(tmp_path, rows), mode="interval")
    assert [wh for _, wh in source] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]


def test_decimal_values_are_summed_exactly(tmp_path: Path) -> None:
    # 0.1 + 0.2 in binary floating point is 0.30000000000000004; Wh must still be 100, 300, 600.
    path = write(tmp_path, "1700000000,0.1\n1700000060,0.2\n1700000120,0.3\n")
    assert [wh for _, wh in CsvSource(path, mode="interval")] == [100, 300, 600]


def test_mode_override_reads_a_rising_interval_file_as_intervals(tmp_path: Path) -> None:
    path = write(tmp_path, "1700000000,0.1\n1700000060,0.2\n1700000120,0.3\n")
    assert CsvSource(path).mode == "cumulative"
    assert CsvSource(path, mode="interval").mode == "interval"


def test_a_cumulative_file_that_goes_down_is_rejected_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "1700000000,5.0\n1700000060,5.2\n1700000120,5.1\n")
    with pytest.raises(ValueError, match=r"sensor\.csv:3: cumulative kWh went down"):
        CsvSource(path, mode="cumulative")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("1700000000,0.1\n1700000060,lots\n", 2, "is not a number"),
        ("timestamp,kwh\n1700000000,0.1\nyesterday,0.2\n", 3, "neither unix seconds nor ISO 8601"),
        ("1700000000,0.1\n\n1700000060\n", 3, "expected two columns"),
        ("1700000000,0.1\n1700000060,-0.2\n", 2, "negative"),
        ("1700000060,0.1\n1700000000,0.2\n", 2, "time order"),
        ("1700000000,0.1\n1700000000.5,0.2\n", 2, "at least 1 s"),
        ("timestamp,kwh\nkwh,timestamp\n", 2, "neither unix seconds nor ISO 8601"),
        ("garbage,0.1\n", 1, "neither unix seconds nor ISO 8601"),
        ("1700000000,nan\n", 1, "is not a number"),
    ],
)
def test_a_malformed_row_is_rejected_naming_the_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=rf"sensor\.csv:{line}: .*{message}"):
        CsvSource(path)


def test_a_file_without_readings_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no readings"):
        CsvSource(write(tmp_path, "timestamp,kwh\n\n"))


def test_a_missing_file_is_rejected_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing.csv"):
        CsvSource(tmp_path / "missing.csv")


def test_bad_mode_and_start_are_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "1700000000,0.1\n")
    with pytest.raises(ValueError, match="mode"):
        CsvSource(path, mode="weekly")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="start_wh"):
        CsvSource(path, start_wh=-1)


def test_retime_moves_the_first_reading_to_the_start_and_keeps_the_spacing(tmp_path: Path) -> None:
    path = write(tmp_path, "2021-06-01T12:00:00Z,0.2\n2021-06-01T12:00:45Z,0.1\n2021-06-01T12:01:30Z,0.3\n")
    original = CsvSource(path, start_wh=7, mode="interval")
    replay = original.retime(1_800_000_000)
    assert replay.readings() == [(1_800_000_000, 207), (1_800_000_045, 307), (1_800_000_090, 607)]
    assert replay.start_time == 1_800_000_000
    assert original.start_time == 1622548800
    assert replay.duration_s == original.duration_s == 90


def test_retime_to_a_fractional_start_never_lands_before_it(tmp_path: Path) -> None:
    path = write(tmp_path, "1600000000.3,0.1\n1600000015.3,0.1\n")
    replay = CsvSource(path).retime(1_800_000_000.0)
    assert [t for t, _ in replay] == [1_800_000_000, 1_800_000_015]


def test_a_byte_order_mark_and_extra_columns_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "sensor.csv"
    path.write_bytes("\ufefftimestamp,kwh,note\n1700000000,0.5,ok\n".encode())
    assert CsvSource(path).readings() == [(1700000000, 500)]


def test_len_counts_the_readings(tmp_path: Path) -> None:
    assert len(CsvSource(write(tmp_path, "ts,kwh\n1,0.1\n2,0.2\n3,0.1\n"))) == 3


@pytest.mark.parametrize(
    ("values", "mode"),
    [
        (["100.0", "100.2", "100.5", "100.7"], "cumulative"),
        (["0", "0.2", "0.5", "0.7"], "cumulative"),
        (["0.2", "0.5", "0.1", "0.4"], "interval"),
        (["0.5", "0.5", "0.5"], "interval"),
        (["1.0", "2.0"], "interval"),
        (["0.1", "0.1", "5.0"], "interval"),
        (["3.0"], "interval"),
    ],
)
def test_detect_mode_calls_a_steady_climb_cumulative(values: list[str], mode: str) -> None:
    assert detect_mode([Decimal(v) for v in values]) == mode
