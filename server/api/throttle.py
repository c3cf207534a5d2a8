"""A rate limit per client address for the API's routes that need no credentials (signing in).

Each client gets a token bucket (``server.endpoint.ratelimit``): ``rate`` requests a second on average,
bursts up to ``burst``. A client is its peer address; IPv6 clients are counted by their /64
network, since one host usually holds a whole /64. Buckets are kept for the
``MAX_CLIENTS`` clients seen most recently: a client forgotten gets a full bucket back, which
is what an idle one would have by then anyway.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict

from common import errors
from server.endpoint.ratelimit import TokenBucket

__all__ = ["TooManyRequests", "ClientLimiter", "client_key", "MAX_CLIENTS"]

#: Clients whose buckets are remembered at once (the least recently seen are forgotten first).
MAX_CLIENTS = 100_000
IPV6_NETWORK_BITS = 64


class TooManyRequests(errors.RateLimited):
    """Raised when a client sends more sign-in requests than its rate allows; answered 429."""

    default_message = "too many sign-in requests from this address; retry later"

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def client_key(host: str | None) -> str:
    """The name a client's requests are counted under: its IPv4 address, or its IPv6 /64."""
    if not host:
        return ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_NETWORK_BITS), strict=False))
    return str(address)


class ClientLimiter:
    """Token buckets per client, bounded to the ``max_clients`` seen most recently."""

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_CLIENTS) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, client: str, now: float) -> None:
        """Count one request of ``client`` at monotonic time ``now``; TooManyRequests when over its rate."""
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate, self.burst)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        if not bucket.allow(now):
            wait = max(1, math.ceil((1.0 - bucket.tokens) / self.rate))
            raise TooManyRequests(f"too many sign-in requests from this address; retry in {wait} s",
                                  retry_after=wait)
