"""Tests for meters.schedule: reading intervals stay in bounds and speed up with time_scale."""

from __future__ import annotations

import random
from statistics import fmean

import pytest

from meters.schedule import IntervalSchedule


def test_ten_thousand_intervals_all_fall_within_the_bounds() -> None:
    schedule = IntervalSchedule(15, 60, rng=random.Random(1))
    draws = [schedule.next_interval() for _ in range(10_000)]
    assert all(15 <= d <= 60 for d in draws)
    assert min(draws) < 16 and max(draws) > 59


def test_ten_thousand_delays_all_fall_within_the_bounds_and_average_the_midpoint() -> None:
    schedule = IntervalSchedule(rng=random.Random(2))
    delays = [schedule.next_delay() for _ in range(10_000)]
    assert all(15 <= d <= 60 for d in delays)
    assert fmean(delays) == pytest.approx(37.5, abs=1.0)


def test_time_scale_divides_the_real_wait() -> None:
    plain = IntervalSchedule(15, 60, rng=random.Random(3))
    fast = IntervalSchedule(15, 60, time_scale=60, rng=random.Random(3))
    for _ in range(1_000):
        assert fast.next_delay() == pytest.approx(plain.next_delay() / 60)


def test_sped_up_intervals_stay_within_the_bounds_in_simulated_seconds() -> None:
    schedule = IntervalSchedule(15, 60, time_scale=120, rng=random.Random(4))
    assert all(15 <= schedule.next_interval() <= 60 for _ in range(1_000))
    assert all(15 / 120 <= schedule.next_delay() <= 60 / 120 for _ in range(1_000))


def test_equal_bounds_give_a_fixed_interval() -> None:
    schedule = IntervalSchedule(30, 30, time_scale=2)
    assert {schedule.next_delay() for _ in range(100)} == {15.0}


def test_the_same_rng_seed_gives_the_same_intervals() -> None:
    first = IntervalSchedule(rng=random.Random(5))
    second = IntervalSchedule(rng=random.Random(5))
    assert [first.next_delay() for _ in range(50)] == [second.next_delay() for _ in range(50)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_s": 0}, "min_s must be a finite number > 0"),
        ({"min_s": -5}, "min_s"),
        ({"max_s": float("inf")}, "max_s"),
        ({"min_s": 61, "max_s": 60}, "min_s must not exceed max_s"),
        ({"time_scale": 0}, "time_scale"),
        ({"time_scale": float("nan")}, "time_scale"),
        ({"time_scale": True}, "time_scale"),
    ],
)
def test_bad_arguments_are_rejected_with_a_clear_message(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IntervalSchedule(**kwargs)  # type: ignore[arg-type]
