"""Relays the contract's events to meters: bills to their meter, rejections as errors, grid
alerts to every meter (or a region's).

Subscribes to new blocks over the chain's WebSocket (``eth_subscribe newHeads``) and fetches
the contract's logs of each new block with one ``eth_getLogs`` (a node pushing every log as
its own notification spends more on it than on mining, under load). On every (re)connection it
first catches up from the last processed log, which it records in the store, so no event is
missed across relay or chain restarts. Events are processed strictly in chain order; a log at
or before the recorded position is skipped. The position is written once a burst of logs is
processed, not after each: after a crash a few events may be relayed again, which meters take
as the same bill twice, never as a missed one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from common.billing import from_text32
from common.chain import logs_between
from common.deployment import Deployment
from common.events import ChainEvent, EventDecoder
from common.logs import log_event
from common.messages import Bill, ErrorMessage, GridAlertMessage, TariffInfo, encode
from common.rpc_socket import RpcSocket
from common.settings import Settings
from common.tariff import REJECT_ERRORS, RejectReason
from server.hub import Hub
from server.store import Store

__all__ = ["Relay"]

log = logging.getLogger("relay")
#: The store keeps the relay's position per contract, so that a redeployed contract is followed from its
#: own first block rather than from where the old one's log had got to.
POSITION_PREFIX = "relay"
RECENT_LIMIT = 100_000


class Relay:
    """Follows the contract's log and turns events into messages for connected meters."""

    def __init__(
        self,
        settings: Settings,
        deployment: Deployment,
        store: Store,
        hub: Hub,
        tariff: TariffInfo,
    ) -> None:
        self.settings = settings
        self.deployment = deployment
        self.store = store
        self.hub = hub
        self.tariff = tariff
        self.decoder = EventDecoder(deployment.abi)
        self.listeners: list[Callable[[ChainEvent], None]] = []
        self._registers: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        self.caught_up = asyncio.Event()
        self.events_processed = 0
        self.active_alerts: dict[int, GridAlertMessage] = {}
        self._alerts_loaded = False
        self._position: tuple[int, int] | None = None
        self._saved: tuple[int, int] | None = None
        self._position_name = f"{POSITION_PREFIX}:{deployment.chain_id}:{deployment.address.lower()}"

    def stop(self) -> None:
        """Stop following the chain."""
        self._stopping.set()

    @property
    def position(self) -> tuple[int, int]:
        """The last processed (block, log index)."""
        if self._position is None:
            saved = self.store.position(self._position_name)
            self._position = self._saved = saved or (self.deployment.block - 1, -1)
        return self._position

    def save_position(self) -> None:
        """Write the position to the store if it moved since it was last written."""
        if self._position is not None and self._position != self._saved:
            self.store.set_position(self._position_name, *self._position)
            self._saved = self._position

    async def run(self) -> None:
        """Follow the chain until stopped, reconnecting with back-off."""
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                await self._follow()
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure means reconnect and catch up
                self.connected.clear()
                self.caught_up.clear()
                log_event(log, "relay_disconnected", logging.WARNING, error=f"{type(err).__name__}: {err}"[:300],
                          retry_in=f"{backoff:.1f}s", url=self.settings.chain_ws_url)
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, 10.0)

    async def _follow(self) -> None:
        async with RpcSocket(self.settings.chain_ws_url) as rpc:
            address = self.deployment.address
            await rpc.request("eth_subscribe", ["newHeads"])
            self.connected.set()
            complete = await self._catch_up(rpc, address)
            self.caught_up.set()
            stop_wait = asyncio.ensure_future(self._stopping.wait())
            try:
                while True:
                    next_head = asyncio.ensure_future(rpc.notification())
                    done, _ = await asyncio.wait({next_head, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                    if stop_wait in done:
                        next_head.cancel()
                        return
                    head = int(next_head.result()["number"], 16)
                    while rpc.pending_notifications():
                        head = max(head, int((await rpc.notification())["number"], 16))
                    if head > complete:
                        async for logs in logs_between(rpc.request, address, complete + 1, head):
                            for raw in logs:
                                self._handle_log(raw)
                        complete = head
                    self.save_position()
            finally:
                stop_wait.cancel()
                self.save_position()

    def recorded(self, meter: str, seq: int) -> bool:
        """Whether the relay has seen this reading recorded on chain (among the last ``RECENT_LIMIT``)."""
        return (meter.lower(), seq) in self._registers

    def alerts_for(self, region: str, now: float) -> list[GridAlertMessage]:
        """Active, unexpired alerts that concern ``region`` (sent to a meter after login)."""
        return [a for a in self.active_alerts.values() if a.expires_at > now and (not a.region or a.region == region)]

    async def _load_alerts(self, rpc: RpcSocket, address: str, head: int) -> None:
        """Rebuild the set of active alerts from the whole log (alerts raised before our position)."""
        topics = [self.decoder.topic("GridAlert"), self.decoder.topic("GridAlertCleared")]
        async for logs in logs_between(rpc.request, address, self.deployment.block, head, [topics]):
            for raw in logs:
                event = self.decoder.decode(raw)
                if event is not None and event.position <= self.position:
                    self._track_alert(event)
        self._alerts_loaded = True

    def _track_alert(self, event: ChainEvent) -> GridAlertMessage | None:
        args = event.args
        if event.name == "GridAlertCleared":
            self.active_alerts.pop(int(args["id"]), None)
            return None
        alert = GridAlertMessage(
            id=int(args["id"]),
            active=True,
            severity=int(args["severity"]),
            kind=from_text32(args["kind"]),
            region=from_text32(args["region"]),
            message=args["message"],
            expires_at=int(args["expiresAt"]),
        )
        self.active_alerts[alert.id] = alert
        return alert

    async def _catch_up(self, rpc: RpcSocket, address: str) -> int:
        """Process every log from the position to the head; returns the head, whose logs are all processed."""
        head = int(await rpc.request("eth_blockNumber", []), 16)
        if not self._alerts_loaded:
            await self._load_alerts(rpc, address, head)
        block, _ = self.position
        start = max(block, self.deployment.block)
        caught = 0
        async for logs in logs_between(rpc.request, address, start, head):
            for raw in logs:
                caught += self._handle_log(raw)
            self.save_position()
        log_event(log, "relay_caught_up", head=head, events=caught, position=f"{self.position[0]}:{self.position[1]}")
        return head

    def _handle_log(self, raw: Any) -> int:
        event = self.decoder.decode(raw)
        if event is None or event.position <= self.position:
            return 0
        try:
            self._dispatch(event)
            for listener in self.listeners:
                listener(event)
        finally:
            self._position = event.position
            self.events_processed += 1
        return 1

    def _dispatch(self, event: ChainEvent) -> None:
        args = event.args
        name = event.name
        if name == "ReadingRecorded":
            key = (args["meter"].lower(), int(args["seq"]))
            self._registers[key] = int(args["energyWh"])
            if len(self._registers) > RECENT_LIMIT:
                self._registers.popitem(last=False)
        elif name == "BillUpdated":
            meter, seq = args["meter"], int(args["seq"])
            bill = Bill(
                meter=meter,
                seq=seq,
                tx_hash=event.tx_hash,
                block=event.block,
                energy_wh=self._registers.get((meter.lower(), seq), 0),
                period_energy_wh=int(args["periodEnergyWh"]),
                amount_due=int(args["amountDue"]),
                tariff=self.tariff,
            )
            self.hub.send(meter, encode(bill))
        elif name == "ReadingRejected":
            meter, seq = args["meter"], int(args["seq"])
            reason = RejectReason(int(args["reason"]))
            if reason is RejectReason.STALE_SEQUENCE and (meter.lower(), seq) in self._registers:
                # A resubmission after a failed batch whose first copy was recorded: nothing to report.
                log_event(log, "duplicate_submission_ignored", meter=meter, seq=seq)
                return
            err = REJECT_ERRORS[reason](f"the chain rejected reading {seq}: {reason.name.lower()}", seq=seq)
            log_event(log, "reading_rejected_on_chain", logging.WARNING, meter=meter, seq=seq, code=err.code)
            self.hub.send(meter, encode(ErrorMessage(code=err.code, message=err.message, seq=seq)))
        elif name == "GridAlert":
            alert = self._track_alert(event)
            assert alert is not None
            sent = self.hub.broadcast(encode(alert), alert.region)
            log_event(log, "grid_alert_relayed", id=alert.id, kind=alert.kind, region=alert.region or "all",
                      meters=sent)
        elif name == "GridAlertCleared":
            self._track_alert(event)
            sent = self.hub.broadcast(encode(GridAlertMessage(id=int(args["id"]), active=False)))
            log_event(log, "grid_alert_cleared_relayed", id=int(args["id"]), meters=sent)
        elif name == "TariffChanged":
            self.tariff = TariffInfo(
                unit_rate=int(args["unitRate"]),
                standing_charge=int(args["standingCharge"]),
                version=int(args["version"]),
            )
            log_event(log, "tariff_changed", unit_rate=self.tariff.unit_rate, standing=self.tariff.standing_charge)
        elif name == "MeterDeactivated":
            meter = args["meter"]
            notice = ErrorMessage(code="meter_inactive", message="this meter was deactivated by the operator")
            self.hub.send(meter, encode(notice))
            log_event(log, "meter_deactivated", meter=meter)
