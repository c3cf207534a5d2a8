"""Sign-in challenges that need no slot on the server: the nonce authenticates itself.

A nonce is 32 bytes (the EIP-712 ``Login`` nonce is a ``bytes32``): when it expires (8 bytes, Unix
seconds), 8 random bytes, and the first 16 bytes of an HMAC-SHA256, under a key of the server's,
of the meter, the expiry and the random bytes. So the server keeps nothing per challenge it hands
out: it recognises its own nonces, for the meter they were made for, until they expire. What it
keeps is the nonces already traded for a token (each good once), and only until they expire; a
nonce enters that list only with the meter's own signature, so no flood of challenges, from any
number of addresses, can push out or spoil a customer's pending one.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import secrets

__all__ = ["ChallengeSigner", "NONCE_BYTES"]

NONCE_BYTES = 32
_EXPIRY_BYTES = 8
_RANDOM_BYTES = 8
_MAC_BYTES = NONCE_BYTES - _EXPIRY_BYTES - _RANDOM_BYTES
_LABEL = b"smartmeter sign-in challenge v1"


class ChallengeSigner:
    """Issues self-authenticating nonces for a meter and checks them once each.

    ``key`` is a secret of the server's (at least 16 bytes); ``ttl`` is how long a nonce is good
    for, in seconds. ``check`` says why a nonce is refused: it was not made by this key for this
    meter (``"mismatch"``), it expired (``"expired"``), or it was used (``"used"``); ``spend``
    marks a nonce used once its signature has been checked.
    """

    def __init__(self, key: bytes, ttl: float) -> None:
        if len(key) < 16:
            raise ValueError("a challenge key needs at least 16 bytes")
        self._key = hmac.new(key, _LABEL, hashlib.sha256).digest()
        self.ttl = ttl
        #: Nonces already traded for a token, with when they expire (a heap, soonest first).
        self._used: set[bytes] = set()
        self._expiring: list[tuple[int, bytes]] = []

    def __len__(self) -> int:
        """How many used nonces are remembered now (those not yet expired, give or take a check)."""
        return len(self._used)

    def issue(self, meter: str, now: float) -> tuple[bytes, int]:
        """A fresh nonce for ``meter`` (0x-hex address), and when it expires (Unix seconds)."""
        expires = int(now + self.ttl)
        head = expires.to_bytes(_EXPIRY_BYTES, "big") + secrets.token_bytes(_RANDOM_BYTES)
        return head + self._mac(meter, head), expires

    def check(self, meter: str, nonce: bytes, now: float) -> str | None:
        """Why ``nonce`` cannot sign ``meter`` in at ``now`` (see the class), or None if it can."""
        if len(nonce) != NONCE_BYTES:
            return "mismatch"
        head, mac = nonce[:-_MAC_BYTES], nonce[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(meter, head)):
            return "mismatch"
        if now > self.expiry(nonce):
            return "expired"
        self._forget_expired(now)
        return "used" if nonce in self._used else None

    def spend(self, nonce: bytes, now: float) -> None:
        """Remember ``nonce`` as used until it expires (call after ``check`` said it is good)."""
        self._forget_expired(now)
        if nonce not in self._used:
            self._used.add(nonce)
            heapq.heappush(self._expiring, (self.expiry(nonce), nonce))

    @staticmethod
    def expiry(nonce: bytes) -> int:
        """When ``nonce`` expires (Unix seconds), as written in it."""
        return int.from_bytes(nonce[:_EXPIRY_BYTES], "big")

    def _mac(self, meter: str, head: bytes) -> bytes:
        meter_bytes = bytes.fromhex(meter.lower().removeprefix("0x"))
        return hmac.new(self._key, meter_bytes + head, hashlib.sha256).digest()[:_MAC_BYTES]

    def _forget_expired(self, now: float) -> None:
        while self._expiring and self._expiring[0][0] < now:
            _, nonce = heapq.heappop(self._expiring)
            self._used.discard(nonce)
