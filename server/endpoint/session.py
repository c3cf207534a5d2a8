"""The state machine of one meter connection: challenge, login, readings. No I/O.

The gateway feeds it parsed messages and does what it answers: send a reply, look the meter
up on chain, queue a reading, close the connection. Each method checks the state first and
raises a specific error when a message arrives at the wrong time.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field

from common import errors
from common.billing import MeterView
from common.eip712 import Domain, recover_login_signer
from common.messages import Auth, Challenge

__all__ = ["SessionState", "Session", "POLICY_VIOLATION", "GOING_AWAY"]

#: WebSocket close codes the gateway uses.
POLICY_VIOLATION = 1008
GOING_AWAY = 1001


class SessionState(enum.Enum):
    """Where a connection is in the protocol."""

    AWAITING_AUTH = "awaiting_auth"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class Session:
    """One connection's protocol state."""

    domain: Domain
    challenge_ttl: float
    state: SessionState = SessionState.AWAITING_AUTH
    nonce: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    issued_at: float = 0.0
    meter: str | None = None

    def challenge(self, now: float) -> Challenge:
        """The challenge to send on connect."""
        self.issued_at = now
        return Challenge(
            nonce="0x" + self.nonce.hex(), expires_at=int(now + self.challenge_ttl), domain=self.domain.as_dict()
        )

    def begin_auth(self, auth: Auth, now: float) -> str:
        """Check a login answer off chain; returns the meter address to look up on chain."""
        if self.state is not SessionState.AWAITING_AUTH:
            raise errors.UnexpectedMessage("already logged in on this connection")
        if auth.nonce.lower() != "0x" + self.nonce.hex():
            raise errors.ChallengeMismatch()
        if now > self.issued_at + self.challenge_ttl:
            raise errors.ChallengeExpired()
        signer = recover_login_signer(self.domain, auth.meter, self.nonce, auth.signature)
        if signer is None or signer.lower() != auth.meter.lower():
            raise errors.BadLoginSignature()
        self.state = SessionState.AUTHENTICATING
        return signer

    def complete_auth(self, view: MeterView) -> str:
        """Finish login with the meter's on-chain state; returns the meter address."""
        if self.state is not SessionState.AUTHENTICATING:
            raise errors.UnexpectedMessage("no login in progress")
        if not view.registered:
            raise errors.UnknownMeter(f"meter {view.address} is not registered on chain")
        if not view.active:
            raise errors.MeterInactive(f"meter {view.address} is deactivated; contact the operator")
        self.meter = view.address
        self.state = SessionState.OPEN
        return view.address

    def require_open(self) -> str:
        """The logged-in meter, or NotAuthenticated."""
        if self.state is not SessionState.OPEN or self.meter is None:
            raise errors.NotAuthenticated()
        return self.meter

    def close(self) -> None:
        """Mark the session closed."""
        self.state = SessionState.CLOSED
