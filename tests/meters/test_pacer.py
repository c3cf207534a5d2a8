"""The meter's pacer: inside the gateway's announced rate limit, never a message the gateway's own bucket drops."""

from __future__ import annotations

import asyncio

from common.messages import RateLimit
from meters.pacer import DEFAULT_LIMIT, Pacer
from server.endpoint.ratelimit import TokenBucket


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_pacer_stays_inside_the_announced_limit_and_defaults_to_the_shipped_one():
    pacer = Pacer.for_limit(RateLimit(per_second=10, burst=8))
    assert pacer.rate <= 10 and pacer.burst <= 8
    default = Pacer.for_limit(None)
    assert default.rate <= DEFAULT_LIMIT.per_second and default.burst <= DEFAULT_LIMIT.burst == 20


def test_messages_sent_as_the_pacer_allows_all_pass_the_gateways_bucket_even_when_they_arrive_bunched():
    clock = _Clock()
    pacer = Pacer.for_limit(RateLimit(per_second=5, burst=20))
    pacer.clock, pacer.updated = clock, clock.now
    sent: list[float] = []
    for _ in range(300):
        clock.now += pacer.delay()  # as ``take`` sleeps
        assert pacer.delay() == 0.0
        pacer.tokens -= 1.0
        sent.append(clock.now)
    # The gateway reads each message up to two seconds late, the late ones bunched together.
    bucket = TokenBucket(5, 20)
    arrivals = sorted(t + (2.0 if i % 7 < 3 else 0.0) for i, t in enumerate(sent))
    assert all(bucket.allow(t) for t in arrivals)
    assert sent[-1] - sent[0] >= (300 - 10) / 5  # never faster than the gateway's average rate


def test_taking_a_token_waits_and_backing_off_pauses_for_a_burst():
    async def run() -> tuple[float, float]:
        pacer = Pacer(rate=100.0, burst=2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(6):
            await pacer.take()
        paced = loop.time() - start
        pacer.back_off()
        start = loop.time()
        await pacer.take()
        return paced, loop.time() - start

    paced, after_back_off = asyncio.run(run())
    assert paced >= 0.035  # 2 at once, then 4 at 100 a second
    assert after_back_off >= 0.015  # a whole burst (2 at 100 a second) refilled first
