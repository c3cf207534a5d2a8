"""Consumption over time: spreading intervals over hours, and local-time buckets."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from server.indexing.history import (
    GroupBy,
    bucket_end,
    bucket_start,
    energy_in_hours,
    group_hours,
    interval_power_w,
    spread_over_hours,
    window_hours,
)

LONDON = ZoneInfo("Europe/London")
H = 3_600


def ts(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp())


def test_an_interval_inside_one_hour_goes_to_that_hour():
    start = ts("2026-11-24T10:05:00+00:00")
    assert spread_over_hours(start, start + 900, 250) == [(start - 300, 250)]


def test_an_interval_across_an_hour_boundary_is_split_by_time_spent():
    start = ts("2026-11-24T10:30:00+00:00")
    assert spread_over_hours(start, start + H, 1000) == [(start - 1800, 500), (start + 1800, 500)]


def test_a_three_hour_interval_splits_with_remainders_adding_up():
    start = ts("2026-11-24T10:00:00+00:00")
    assert spread_over_hours(start, start + 3 * H, 100) == [(start, 34), (start + H, 33), (start + 2 * H, 33)]


@given(st.integers(0, 2**31), st.integers(1, 10 * H), st.integers(0, 10**7))
def test_spread_energy_always_adds_up_and_stays_in_covered_hours(start, length, energy):
    parts = spread_over_hours(start, start + length, energy)
    assert sum(wh for _, wh in parts) == energy
    assert all(wh >= 0 for _, wh in parts)
    hours = [h for h, _ in parts]
    assert hours == sorted(set(hours))
    assert hours[0] <= start < hours[0] + H and hours[-1] < start + length <= hours[-1] + H


def test_days_weeks_and_months_start_at_local_midnight():
    at = ts("2026-07-15T23:30:00+00:00")  # 00:30 on the 16th in London (BST)
    assert bucket_start(at, GroupBy.DAY, LONDON) == ts("2026-07-16T00:00:00+01:00")
    assert bucket_start(at, GroupBy.WEEK, LONDON) == ts("2026-07-13T00:00:00+01:00")  # a Monday
    assert bucket_start(at, GroupBy.MONTH, LONDON) == ts("2026-07-01T00:00:00+01:00")
    assert bucket_start(at, GroupBy.HOUR, LONDON) == ts("2026-07-15T23:00:00+00:00")


def test_the_day_the_clocks_go_back_lasts_25_hours():
    start = bucket_start(ts("2026-10-25T12:00:00+00:00"), GroupBy.DAY, LONDON)
    assert bucket_end(start, GroupBy.DAY, LONDON) - start == 25 * H
    december = bucket_start(ts("2026-12-10T12:00:00+00:00"), GroupBy.MONTH, LONDON)
    assert bucket_end(december, GroupBy.MONTH, LONDON) == ts("2027-01-01T00:00:00+00:00")


def test_grouping_hours_totals_them_per_local_day():
    day = ts("2026-11-23T00:00:00+00:00")
    hours = [(day + i * H, 10) for i in range(30)]
    assert group_hours(hours, GroupBy.DAY, LONDON) == [(day, day + 24 * H, 240), (day + 24 * H, day + 48 * H, 60)]


def test_interval_power_is_mean_watts():
    assert interval_power_w(500, 900) == 2000
    assert interval_power_w(10, 0) == 0


def test_a_window_holds_the_hours_that_begin_inside_it():
    ten = ts("2026-11-24T10:00:00+00:00")
    assert window_hours(ten, ten + 2 * H) == (ten, ten + 2 * H)
    assert window_hours(ten + 1, ten + 2 * H + 1) == (ten + H, ten + 3 * H)
    assert window_hours(ten + 1, ten + 2) == (ten + H, ten + H)  # no hour begins inside it


def test_a_reading_across_a_windows_edge_counts_its_share_of_the_hours_inside():
    start = ts("2026-11-24T10:30:00+00:00")
    # 10:30 to 12:30, 1000 Wh: 250 in the 10 o'clock hour, 500 in the 11, 250 in the 12.
    assert energy_in_hours(start, start + 2 * H, 1000, start + H // 2, start + 5 * H // 2) == 750
    assert energy_in_hours(start, start + 2 * H, 1000, start - H // 2, start + H // 2) == 250
    assert energy_in_hours(start, start + 2 * H, 1000, start + 3 * H, start + 4 * H) == 0


@given(st.integers(0, 2**31), st.integers(1, 10 * H), st.integers(0, 10**7), st.integers(0, 12 * H))
def test_the_hours_of_a_window_and_the_rest_share_a_readings_energy_exactly(start, length, energy, cut):
    first, after = window_hours(start - H, start + cut)
    inside = energy_in_hours(start, start + length, energy, first, after)
    outside = energy_in_hours(start, start + length, energy, after, 2**40)
    before = energy_in_hours(start, start + length, energy, 0, first)
    assert inside + outside + before == energy and 0 <= inside <= energy
