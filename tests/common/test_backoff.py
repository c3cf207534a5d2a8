"""The one back-off: doubling from the first wait to the cap, reset by a success, spread by a random source."""

from __future__ import annotations

import random

from common.backoff import Backoff, backoff_delay


def test_waits_double_from_the_first_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_success_starts_again_from_the_first_wait() -> None:
    backoff = Backoff(1.0, 30.0)
    backoff.failed(), backoff.failed()
    backoff.succeeded()
    assert backoff.failed() == 1.0


def test_a_random_source_spreads_each_wait_over_half_to_one_and_a_half_times() -> None:
    waits = [Backoff(2.0, 30.0, random.Random(seed)).failed() for seed in range(200)]
    assert min(waits) >= 1.0 and max(waits) <= 3.0
    assert max(waits) - min(waits) > 1.5


def test_the_delay_for_a_count_of_failures_matches_the_counter() -> None:
    assert [backoff_delay(n, 0.2, 5.0) for n in (1, 2, 3, 6)] == [0.2, 0.4, 0.8, 5.0]
