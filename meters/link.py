"""A meter's connection to the gateway: TLS WebSocket, challenge login, signed readings.

Thin asyncio code over the shared schema (``common.messages``) and EIP-712 types
(``common.eip712``). The meter trusts only the project's CA, and refuses a challenge whose
EIP-712 domain is not the deployment it was provisioned for. Once logged in, every message waits
for the pacer set to the rate limit the gateway announced in ``welcome`` (``meters.pacer``).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from eth_account import Account
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from common import errors
from common.eip712 import Domain, ReadingData, sign_login, sign_reading
from common.messages import (
    SUBPROTOCOLS,
    Auth,
    Challenge,
    ErrorMessage,
    Reading,
    Welcome,
    encode,
    parse_message,
    protocol_version,
)
from meters.pacer import Pacer

__all__ = ["MeterLink", "signed_reading"]


def signed_reading(key: bytes | str, domain: Domain, data: ReadingData) -> Reading:
    """The wire message for a reading, signed with the meter's key."""
    return Reading(
        meter=data.meter,
        seq=data.seq,
        timestamp=data.timestamp,
        energy_wh=data.energy_wh,
        export_wh=data.export_wh,
        signature=sign_reading(key, domain, data),
    )


class MeterLink:
    """One logged-in connection of a meter to the gateway."""

    def __init__(self, url: str, ssl_context: ssl.SSLContext, key: bytes | str, domain: Domain,
                 open_timeout: float = 10.0, ping_interval: float | None = 20.0) -> None:
        self.url = url
        self.ssl_context = ssl_context
        self.key = key
        self.address = Account.from_key(key).address
        self.domain = domain
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ws: ClientConnection | None = None
        self.welcome: Welcome | None = None
        #: Paces the messages after login to the gateway's rate limit (None until ``welcome``).
        self.pacer: Pacer | None = None

    @property
    def version(self) -> int:
        """The protocol version the server agreed to speak on this connection."""
        return protocol_version(self.ws.subprotocol if self.ws is not None else None)

    async def connect(self) -> Welcome:
        """Connect, answer the challenge and wait for ``welcome`` (raises the server's error)."""
        # Offering every version, newest first: version 3 gets provisional bills (bill.final), version 2
        # welcome.lastUsedSeq; a server that predates them answers an older one, or none (version 1).
        self.ws = await connect(self.url, ssl=self.ssl_context, open_timeout=self.open_timeout,
                                ping_interval=self.ping_interval, max_size=2**20, compression=None,
                                subprotocols=[Subprotocol(p) for p, _ in sorted(SUBPROTOCOLS.items(),
                                                                                 key=lambda pv: -pv[1])])
        challenge = await self.recv()
        if not isinstance(challenge, Challenge):
            raise errors.UnexpectedMessage(f"expected a challenge, got '{challenge.type}'")
        if challenge.domain != self.domain.as_dict():
            await self.close()
            raise errors.ConfigError(
                f"the server at {self.url} serves contract {challenge.domain.get('verifyingContract')} on chain "
                f"{challenge.domain.get('chainId')}, not the one this meter was provisioned for"
            )
        nonce = bytes.fromhex(challenge.nonce[2:])
        await self.send(Auth(meter=self.address, nonce=challenge.nonce,
                             signature=sign_login(self.key, self.domain, nonce)))
        reply = await self.recv()
        if isinstance(reply, ErrorMessage):
            await self.close()
            raise errors.error_for_code(reply.code, reply.message)
        if not isinstance(reply, Welcome):
            raise errors.UnexpectedMessage(f"expected welcome, got '{reply.type}'")
        self.welcome = reply
        self.pacer = Pacer.for_limit(reply.rate_limit)
        return reply

    async def send(self, message: Any) -> None:
        """Send one message (after login, when the gateway's rate limit allows it)."""
        assert self.ws is not None, "not connected"
        if self.pacer is not None:
            await self.pacer.take()
        await self.ws.send(encode(message))

    async def send_reading(self, data: ReadingData) -> Reading:
        """Sign and send a reading; returns the message sent."""
        msg = signed_reading(self.key, self.domain, data)
        await self.send(msg)
        return msg

    async def recv(self, timeout: float | None = None) -> Any:
        """The next message from the server."""
        assert self.ws is not None, "not connected"
        raw = await asyncio.wait_for(self.ws.recv(), timeout) if timeout else await self.ws.recv()
        return parse_message(raw)

    async def close(self) -> None:
        """Close the connection normally."""
        if self.ws is not None:
            await self.ws.close()
