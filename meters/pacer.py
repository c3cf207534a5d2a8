"""Paces a meter's messages to the gateway's rate limit, so that a backlog resent after an outage is
delivered whole instead of losing its tail to the limit (and the connection to flood protection).

The gateway holds each connection to a token bucket (``RATE_LIMIT_PER_SECOND`` on average, bursts
of ``RATE_LIMIT_BURST``) and announces it in ``welcome.rateLimit``; a server that predates the
announcement is taken to use the shipped defaults. The meter keeps a bucket of its own that is
stricter (a share of the rate, half the burst), so that messages which reach the gateway bunched
together, or are read late by a busy gateway, still find a token there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.messages import RateLimit
from common.settings import Settings

__all__ = ["Pacer", "RATE_SHARE", "BURST_SHARE", "DEFAULT_LIMIT"]

#: Share of the gateway's average rate the meter sends at.
RATE_SHARE = 0.9
#: Share of the gateway's burst the meter sends at once: the rest absorbs up to ``burst * (1 - BURST_SHARE) /
#: rate`` seconds of messages arriving bunched (two seconds at the defaults).
BURST_SHARE = 0.5
#: The limit of a gateway that does not announce one (it predates ``welcome.rateLimit``): the shipped defaults.
DEFAULT_LIMIT = RateLimit(per_second=Settings().rate_limit_per_second, burst=Settings().rate_limit_burst)


@dataclass
class Pacer:
    """A token bucket the meter waits on before each message: ``rate`` a second, ``burst`` at once."""

    rate: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    updated: float = field(init=False)
    #: Seconds spent waiting for a token, in all (for the log: how much the limit slowed a resend).
    waited: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)
        self.updated = self.clock()

    @classmethod
    def for_limit(cls, limit: RateLimit | None) -> Pacer:
        """A pacer inside the gateway's announced limit (the shipped defaults when it announced none)."""
        limit = limit or DEFAULT_LIMIT
        return cls(max(limit.per_second * RATE_SHARE, 0.1), max(1, int(limit.burst * BURST_SHARE)))

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def delay(self) -> float:
        """Seconds until a token is free (0: one is free now)."""
        self._refill()
        missing = 1.0 - self.tokens
        return 0.0 if missing <= 1e-9 else missing / self.rate

    async def take(self) -> None:
        """Wait until a token is free, then take it."""
        while (wait := self.delay()) > 0:
            self.waited += wait
            await asyncio.sleep(wait)
        self.tokens -= 1.0

    def back_off(self) -> None:
        """The gateway said it dropped messages anyway: send nothing until a whole burst has refilled."""
        self._refill()
        self.tokens = min(self.tokens, 0.0) - self.burst + 1.0
