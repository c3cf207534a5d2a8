"""Demand response over the meters' wire (protocol version 4 on): events out to the meters they target, opt-outs
and (version 5) their withdrawals in.

``DemandResponseRelay`` follows the DemandResponse contract's logs up to the final block (polling; a few
seconds late is nothing against an event's notice of minutes, and nothing final is ever taken back), keeps
every event with its target and each meter's opt-out and credit, and sends a ``demand_response`` message
to each connected meter an event targets when the event is announced, changed or cancelled, and to one
meter when its opt-out or its credit is recorded. After a login the gateway sends the meter its events
not long over (``messages_for``).

``OptOutRelayer`` sends meters' signed opt-outs and withdrawals to the contract with ``RELAYER_KEY``, one
transaction at a time (its own nonces, apart from the batcher's), for the gateway and the REST API alike.

An opt-out signs the event's id, modification number and terms (``common.eip712``): one signed for an older
modification is refused before any gas is spent, and a version 4 meter's opt-out, which signs the id alone,
is refused outright (the contract no longer takes it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from eth_utils import to_checksum_address

from common import errors
from common.chain import AsyncChainClient, ChainClient, logs_between
from common.demand_response import DemandResponse
from common.deployment import Deployment
from common.dr_book import BookedEvent, EventBook
from common.dr_terms import Status
from common.eip712 import recover_optout_signer
from common.events import ChainEvent, EventDecoder
from common.logs import log_event
from common.messages import DemandResponseMessage, OptOut, OptOutWithdrawal, encode
from common.settings import Settings
from server import metrics
from server.bus.hub import Hub

__all__ = ["DemandResponseRelay", "OptOutRelayer", "event_message", "RECENT_SECONDS", "POLL_SECONDS", "DR_VERSION",
           "BOUND_OPT_OUT_VERSION"]

log = logging.getLogger("demand_response")

#: Events over (ended, or cancelled and past their start) longer ago than this are not sent after a login.
RECENT_SECONDS = 86_400
#: Seconds between looks at the chain for new final blocks.
POLL_SECONDS = 2.0
#: The protocol version that carries demand response.
DR_VERSION = 4
#: The protocol version whose opt-outs sign the event's modification and terms and may be withdrawn.
BOUND_OPT_OUT_VERSION = 5


def _recent(booked: BookedEvent, now: float) -> bool:
    """Whether an event is still worth telling a meter about (not long over)."""
    over = booked.terms.start if booked.cancelled else booked.terms.end
    return over > now - RECENT_SECONDS


def event_message(booked: BookedEvent, meter: str, now: float) -> DemandResponseMessage:
    """An event as ``meter`` is told it at ``now``."""
    credit = booked.credits.get(meter.lower())
    return DemandResponseMessage(
        id=booked.id, modification=booked.modification, programme=booked.programme, notice_at=booked.notice_at,
        start=booked.terms.start, duration=booked.terms.duration, ramp_up=booked.terms.ramp_up,
        signal_kind=booked.terms.signal_kind.name.lower(),  # type: ignore[arg-type]
        signal_value=booked.terms.signal_value, credit_rate=booked.terms.credit_rate,
        status=booked.status(now).name.lower(),  # type: ignore[arg-type]
        opted_out=meter.lower() in booked.opted_out,
        credit=None if credit is None else credit.amount,
        baseline_wh=None if credit is None else credit.baseline_wh,
        actual_wh=None if credit is None else credit.actual_wh,
    )


class DemandResponseRelay:
    """Follows the DemandResponse contract's final logs and tells each targeted meter (protocol 4) about its events."""

    def __init__(self, deployment: Deployment, chain: AsyncChainClient, hub: Hub, final: Callable[[], int | None],
                 poll_seconds: float = POLL_SECONDS) -> None:
        if deployment.demand_response is None:
            raise errors.DeploymentMissing("this deployment has no DemandResponse contract")
        self.address = deployment.demand_response.address
        self.domain = deployment.demand_response_domain
        self.chain = chain
        self.hub = hub
        self.final = final
        self.poll_seconds = poll_seconds
        self.decoder = EventDecoder(deployment.demand_response.abi)
        self.book = EventBook()
        #: (event, lower-case meter) opt-outs sent and not yet answered.
        self.in_flight: set[tuple[int, str]] = set()
        self._next = deployment.block
        self._caught_up = False
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Make ``run`` return at its next look at the chain (or at once, while it waits)."""
        self._stopping.set()

    async def run(self) -> None:
        """Follow the contract until stopped, reading each new final block's logs."""
        while not self._stopping.is_set():
            final = self.final()
            if final is not None and final >= self._next:
                async for logs in logs_between(self.chain.request, self.address, self._next, final):
                    for raw in logs:
                        event = self.decoder.decode(raw)
                        if event is None:
                            continue
                        try:
                            self._apply(event)
                        except Exception as err:  # noqa: BLE001 - one bad event must not hold up the others
                            log_event(log, "demand_response_event_failed", logging.ERROR, name=event.name,
                                      block=event.block, error=f"{type(err).__name__}: {err}"[:300])
                self._next = final + 1
                if not self._caught_up:
                    self._caught_up = True
                    log_event(log, "demand_response_caught_up", final=final, events=len(self.book.events))
            try:
                await asyncio.wait_for(self._stopping.wait(), self.poll_seconds)
            except asyncio.TimeoutError:
                pass

    # ---------------------------------------------------------------- events

    def _apply(self, event: ChainEvent) -> None:
        booked = self.book.apply(event)
        if booked is None:
            return
        metrics.demand_response_event(event)
        if event.name in ("DemandResponseEvent", "DemandResponseCancelled"):
            self._broadcast(booked, "demand_response_event_relayed" if event.name == "DemandResponseEvent"
                            else "demand_response_cancel_relayed")
        else:  # an opt-out or a credit: the meter's own
            self._tell(booked, event.args["meter"])

    def _broadcast(self, booked: BookedEvent, what: str) -> None:
        """Send an event to every connected meter of protocol 4 it targets (unless it is long over)."""
        now = time.time()
        if not _recent(booked, now):
            return
        sent = 0
        for meter, peer in list(self.hub.peers.items()):
            if peer.version >= DR_VERSION and booked.targets(meter, peer.region):
                sent += self.hub.send(meter, encode(event_message(booked, meter, now)))
        log_event(log, what, id=booked.id, modification=booked.modification,
                  status=booked.status(now).name.lower(), meters=sent)

    def _tell(self, booked: BookedEvent, meter: str) -> None:
        """Send one meter its part in an event, if it is connected with protocol 4."""
        peer = self.hub.peers.get(meter.lower())
        if peer is not None and peer.version >= DR_VERSION:
            self.hub.send(meter, encode(event_message(booked, meter, time.time())))

    def messages_for(self, meter: str, region: str, now: float) -> list[DemandResponseMessage]:
        """The events a meter is told after login: those that target it and are not long over, oldest first."""
        return [event_message(b, meter, now) for _, b in sorted(self.book.events.items())
                if b.targets(meter, region) and _recent(b, now)]

    # ---------------------------------------------------------------- opt-outs

    def check_opt_out(self, msg: OptOut | OptOutWithdrawal, meter: str, region: str, now: float) -> None:
        """The off-chain checks of a meter's opt-out or withdrawal, before any gas is spent; raises with a plain
        reason."""
        withdrawal = isinstance(msg, OptOutWithdrawal)
        what = "withdrawal of the opt-out" if withdrawal else "opt-out"
        if msg.meter.lower() != meter.lower():
            raise errors.WrongMeter(f"this connection is logged in as {meter}, not {msg.meter}")
        if msg.modification is None:
            raise errors.OptOutRefused(f"the opt-out of event {msg.event_id} signs the event's id alone (protocol "
                                       "version 4), which the contract no longer takes: a meter of version 5 signs "
                                       "the event's modification and terms")
        booked = self.book.events.get(msg.event_id)
        if booked is None or not booked.targets(meter, region):
            raise errors.OptOutRefused(f"event {msg.event_id} does not target this meter (or is not final yet)")
        if msg.modification != booked.modification:
            raise errors.OptOutRefused(f"the {what} signs modification {msg.modification} of event "
                                       f"{msg.event_id}, which is at modification {booked.modification} now: "
                                       "sign its current terms")
        signer = recover_optout_signer(self.domain, msg.meter, msg.event_id, msg.modification, booked.terms,
                                       msg.signature, withdrawal=withdrawal)
        if signer is None or signer.lower() != meter.lower():
            kind = "OptOutWithdrawal" if withdrawal else "OptOut"
            raise errors.BadSignature(f"the {what} of event {msg.event_id} is not signed by this meter's key "
                                      f"(EIP-712 {kind}(meter, eventId, modification, terms) of its current terms)")
        status = booked.status(now)
        if status not in (Status.FAR, Status.NEAR):
            raise errors.OptOutRefused(f"event {msg.event_id} is {status.name.lower()}: the {what} is possible "
                                       "only before it starts")
        key = meter.lower()
        if (msg.event_id, key) in self.in_flight:
            raise errors.OptOutRefused(f"this meter's opt-out of event {msg.event_id} is being changed already")
        if withdrawal and key not in booked.opted_out:
            raise errors.OptOutRefused(f"this meter has not opted out of event {msg.event_id}'s current terms")
        if not withdrawal and key in booked.opted_out:
            raise errors.OptOutRefused(f"this meter has opted out of event {msg.event_id} already")
        if not withdrawal and key in booked.withdrawn:
            raise errors.OptOutRefused(f"this meter withdrew its opt-out of event {msg.event_id}'s current terms: "
                                       "it may opt out again only if the event is changed")

    def opted_out(self, event_id: int, meter: str, *, withdrawal: bool = False) -> str:
        """A meter's opt-out (or its withdrawal) was recorded on chain (its block may not be final yet; its log
        confirms it): the event as the meter is told it from now on."""
        booked = self.book.events[event_id]
        if withdrawal:
            booked.opted_out.discard(meter.lower())
            booked.withdrawn.add(meter.lower())
        else:
            booked.opted_out.add(meter.lower())
        return encode(event_message(booked, meter, time.time()))


class OptOutRelayer:
    """Sends meters' signed opt-outs to the DemandResponse contract with ``RELAYER_KEY``, one at a time."""

    def __init__(self, settings: Settings, deployment: Deployment) -> None:
        self.settings = settings
        self.deployment = deployment
        self._lock = asyncio.Lock()
        self._dr: DemandResponse | None = None

    @property
    def dr(self) -> DemandResponse:
        """The contract, through a client of the relayer's own (made on first use)."""
        if self._dr is None:
            self._dr = DemandResponse(ChainClient(self.settings), self.deployment)
        return self._dr

    async def relay(self, event_id: int, meter: str, modification: int, signature: str, *,
                    withdrawal: bool = False) -> str:
        """Send one opt-out (or, ``withdrawal``, its withdrawal) signed for ``modification`` and wait for its
        block; returns the transaction hash, or raises OptOutRefused."""
        async with self._lock:
            return await asyncio.to_thread(self._send, event_id, meter, modification, signature, withdrawal)

    def _send(self, event_id: int, meter: str, modification: int, signature: str, withdrawal: bool) -> str:
        try:
            receipt: Any = self.dr.opt_out(event_id, meter, modification, signature, key=self.settings.relayer_key,
                                           withdrawal=withdrawal)
        except errors.ChainError as err:
            if "refused the call" not in str(err):
                raise
            raise errors.OptOutRefused(str(err).split("refused the call: ", 1)[-1]) from err
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        log_event(log, "opt_out_withdrawal_relayed" if withdrawal else "opt_out_relayed", id=event_id,
                  modification=modification, meter=to_checksum_address(meter), tx=tx_hash)
        return tx_hash
