"""When a simulated meter takes its next reading: random intervals, optionally sped up."""

from __future__ import annotations

import math
import random

__all__ = ["IntervalSchedule"]


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


class IntervalSchedule:
    """Random reading intervals, uniform in ``[min_s, max_s]`` simulated seconds.

    ``time_scale`` is how many simulated seconds pass per real second: the simulated interval
    is always within the bounds, and the real wait is that interval divided by ``time_scale``
    (at 60, a 30 s interval is a half-second wait). Pass ``rng`` for reproducible draws.

    Raises:
        ValueError: if a bound or ``time_scale`` is not a finite number > 0, or ``min_s > max_s``.
    """

    def __init__(
        self,
        min_s: float = 15,
        max_s: float = 60,
        time_scale: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        self.min_s = _check_positive("min_s", min_s)
        self.max_s = _check_positive("max_s", max_s)
        if self.min_s > self.max_s:
            raise ValueError(f"min_s must not exceed max_s, got min_s={min_s} max_s={max_s}")
        self.time_scale = _check_positive("time_scale", time_scale)
        self._rng = rng if rng is not None else random.Random()

    def next_interval(self) -> float:
        """Draw the next interval in simulated seconds, within ``[min_s, max_s]``."""
        # uniform() may round to just past ``b``; the clamp keeps the documented bound exact.
        return min(max(self._rng.uniform(self.min_s, self.max_s), self.min_s), self.max_s)

    def next_delay(self) -> float:
        """Draw the next interval and return the real seconds to wait for it."""
        return self.next_interval() / self.time_scale
