"""Exponential back-off: one definition for everything that retries (relay, batcher, chain
client, meters, grid-alert emitter).

A ``Backoff`` counts failures in a row; after each it says how long to wait: ``first``
seconds, doubling with every further failure, never more than ``cap``. With a random source it
spreads each wait over half to one and a half times that, so that many clients cut off
together (meters when the server restarts) do not come back together.
"""

from __future__ import annotations

import random

__all__ = ["Backoff", "backoff_delay"]


def backoff_delay(failures: int, first: float, cap: float) -> float:
    """The wait after ``failures`` failures in a row (1 for the first): ``first`` doubling, at most ``cap``."""
    return float(min(first * 2 ** max(failures - 1, 0), cap))


class Backoff:
    """Failures in a row, and the wait each one calls for."""

    def __init__(self, first: float, cap: float, rng: random.Random | None = None) -> None:
        """``rng``: spread each wait over 0.5-1.5 times its value (None: exact waits)."""
        self.first = first
        self.cap = cap
        self.rng = rng
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; returns how long to wait before the next try."""
        self.failures += 1
        delay = backoff_delay(self.failures, self.first, self.cap)
        return delay * (0.5 + self.rng.random()) if self.rng is not None else delay

    def succeeded(self) -> None:
        """Start again from ``first`` after a success."""
        self.failures = 0
