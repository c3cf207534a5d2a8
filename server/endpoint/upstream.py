"""What the meters' endpoint needs of the rest of the server, and its in-process form.

The gateway (TLS, framing, login, the off-chain checks, the durable queue) asks the server's
other parts for four things: what a meter is told at login (the tariff, the final block its
``welcome`` is read at, the grid alerts and demand-response events that concern it), whether
a resent reading is final on chain, to relay a meter's opt-out, and to wake the batcher after
a commit. ``Upstream`` names them; ``InProcess`` answers them from the parts of the same
process, and ``server.bus.gateway_link.BusUpstream`` from the cores over NATS, for a stateless
gateway on the bus (``SERVER_ROLE=gateway``, or each process of ``GATEWAY_WORKERS``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from common import errors
from common.chain import AsyncChainClient
from common.logs import clip, log_event
from common.messages import ErrorMessage, OptOut, OptOutWithdrawal, TariffInfo, encode
from common.settings import Settings
from server.bus.hub import Hub
from server.relay.dr_relay import DR_VERSION, DemandResponseRelay, OptOutRelayer
from server.relay.relay import Relay
from server.writer.batcher import Batcher

__all__ = ["Upstream", "LoginContext", "InProcess", "final_block"]

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class LoginContext:
    """What a meter is told at login besides its own state: the tariff, the block its state is read at (the
    final one, or ``latest`` when every block is final), and the messages that follow ``welcome``."""

    tariff: TariffInfo
    final_at: int | str
    #: Grid alerts and demand-response events that concern the meter, on the wire already.
    preface: list[str] = field(default_factory=list)


class Upstream(Protocol):
    """The server's parts as the gateway sees them."""

    async def login(self, meter: str, region: str, version: int) -> LoginContext:
        """A meter logged in (it is in the gateway's hub, its messages held): what it is told after ``welcome``."""

    def logout(self, meter: str) -> None:
        """A meter's connection went (called only for the connection the hub still held)."""

    def settled(self, meter: str, seq: int) -> bool:
        """Whether this queued reading is already in a final block (a resend of it is not a duplicate to ack)."""

    def opt_out(self, msg: OptOut | OptOutWithdrawal, meter: str, region: str) -> str | None:
        """Relay a meter's opt-out or its withdrawal (its answer reaches the meter through the hub); returns a
        refusal at once, or None."""

    def queued(self, count: int) -> None:
        """``count`` readings were committed to the queue: the batcher may take them."""


async def final_block(settings: Settings, relay: Relay, chain: AsyncChainClient) -> int | str:
    """The block whose state is final: ``latest`` when every block is (``CONFIRMATIONS=0``)."""
    depth = settings.finality_depth
    if depth == 0:
        return "latest"
    if relay.final is not None:
        return max(relay.final, 0)
    head = int(await chain.request("eth_blockNumber", []), 16)
    return max(head - depth, 0)


def opt_out_refused(meter: str, event_id: int, err: errors.SmartMeterError) -> str:
    """Log a refused opt-out; returns its wire form for the meter: the error with the event it concerns."""
    log_event(log, "opt_out_refused", logging.WARNING, meter=meter, id=event_id, code=err.code,
              detail=clip(err.message))
    return encode(ErrorMessage(code=err.code, message=err.message, event_id=event_id))


class InProcess:
    """The upstream of a gateway in the server's own process (and of every worker, as the main process serves
    them): the relay, the batcher and demand response, and the hub that reaches the meters."""

    def __init__(self, settings: Settings, chain: AsyncChainClient, hub: Hub, batcher: Batcher, relay: Relay,
                 demand_response: DemandResponseRelay | None = None, opt_outs: OptOutRelayer | None = None) -> None:
        self.settings = settings
        self.chain = chain
        self.hub = hub
        self.batcher = batcher
        self.relay = relay
        self.demand_response = demand_response
        self.opt_outs = opt_outs
        self._background: set[asyncio.Task[None]] = set()

    async def login(self, meter: str, region: str, version: int) -> LoginContext:
        """The tariff now, the final block, and the active alerts and demand-response events for the meter."""
        final_at = await final_block(self.settings, self.relay, self.chain)
        now = time.time()
        preface = [encode(a) for a in self.relay.alerts_for(region, now)]
        if self.demand_response is not None and version >= DR_VERSION:
            preface += [encode(e) for e in self.demand_response.messages_for(meter, region, now)]
        return LoginContext(self.relay.tariff, final_at, preface)

    def logout(self, meter: str) -> None:
        """Nothing to do: the hub is this process's own."""

    def settled(self, meter: str, seq: int) -> bool:
        """Whether the relay saw the reading recorded in a final block."""
        return self.relay.settled(meter, seq)

    def opt_out(self, msg: OptOut | OptOutWithdrawal, meter: str, region: str) -> str | None:
        """Check a meter's opt-out or withdrawal off chain and relay it in the background; returns a refusal, or
        None."""
        dr, relayer = self.demand_response, self.opt_outs
        try:
            if dr is None or relayer is None:
                raise errors.OptOutRefused("this deployment has no demand-response contract")
            dr.check_opt_out(msg, meter, region, time.time())
        except errors.SmartMeterError as err:
            return opt_out_refused(meter, msg.event_id, err)
        key = (msg.event_id, meter.lower())
        withdrawal = isinstance(msg, OptOutWithdrawal)
        modification = msg.modification
        assert modification is not None  # check_opt_out refuses an opt-out without it
        dr.in_flight.add(key)
        log_event(log, "opt_out_withdrawal_received" if withdrawal else "opt_out_received", meter=meter,
                  id=msg.event_id, modification=modification)

        async def send() -> None:
            try:
                await relayer.relay(msg.event_id, meter, modification, msg.signature, withdrawal=withdrawal)
                self.hub.send(meter, dr.opted_out(msg.event_id, meter, withdrawal=withdrawal))
            except errors.SmartMeterError as err:
                self.hub.send(meter, opt_out_refused(meter, msg.event_id, err))
            finally:
                dr.in_flight.discard(key)

        task = asyncio.get_running_loop().create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return None

    def queued(self, count: int) -> None:
        """Wake the batcher."""
        self.batcher.notify()
