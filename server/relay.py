"""Relays the contract's events to meters: bills to their meter, rejections as errors, grid
alerts to every meter (or a region's).

Subscribes to new blocks over the chain's WebSocket (``eth_subscribe newHeads``) and fetches
the contract's logs of each new block with one ``eth_getLogs`` (a node pushing every log as
its own notification spends more on it than on mining, under load). The logs are read in a
thread of the relay's own (see ``server.threads``), which tells the batcher at once which of its
batches were mined, and are handed to the server's loop to be relayed and indexed there.

On every (re)connection it first catches up from the last processed log, which it records in
the store, so no event is missed across relay or chain restarts. Events are processed strictly
in chain order; a log at or before the recorded position is skipped. The position is written
once a burst of logs is processed, not after each: after a crash a few events may be relayed
again, which meters take as the same bill twice, never as a missed one.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from common.backoff import Backoff
from common.billing import from_text32
from common.chain import logs_between
from common.deployment import Deployment
from common.events import BatchOutcome, ChainEvent, EventDecoder
from common.logs import log_event
from common.messages import Bill, ErrorMessage, GridAlertMessage, TariffInfo, encode
from common.rpc_socket import RpcSocket
from common.settings import Settings
from common.tariff import REJECT_ERRORS, RejectReason, Schedule, standing_charge
from server.hub import Hub
from server.index import Index
from server.store import Store
from server.threads import run_in_own_thread

__all__ = ["Relay"]

log = logging.getLogger("relay")
#: The store keeps the relay's position per contract, so that a redeployed contract is followed from its
#: own first block rather than from where the old one's log had got to.
POSITION_PREFIX = "relay"
RECENT_LIMIT = 100_000
#: Waits before reconnecting to the chain: from this, doubling, up to the cap (seconds).
RECONNECT_FIRST, RECONNECT_CAP = 0.5, 10.0


class Relay:
    """Follows the contract's log and turns events into messages for connected meters."""

    def __init__(
        self,
        settings: Settings,
        deployment: Deployment,
        store: Store,
        hub: Hub,
        index: Index,
    ) -> None:
        self.settings = settings
        self.deployment = deployment
        self.store = store
        self.hub = hub
        #: The index (caught up before the relay starts) knows each meter's open period and the tariff
        #: schedule; the relay follows billing periods itself as it relays, to be exact about their starts.
        self.index = index
        self._periods: dict[str, tuple[int, int, int]] = {}
        self.decoder = EventDecoder(deployment.abi)
        self.listeners: list[Callable[[ChainEvent], None]] = []
        #: Told which batches each fetch of logs shows mined, before their events are relayed; called in the
        #: relay's thread.
        self.mined_listeners: list[Callable[[dict[str, BatchOutcome]], None]] = []
        self._registers: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._stopping = False
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_task: asyncio.Task[None] | None = None
        self._events_at_connect = 0
        self.connected = asyncio.Event()
        self.caught_up = asyncio.Event()
        self.events_processed = 0
        #: The newest block whose logs were fetched (for ``/health``).
        self.head: int | None = None
        self.active_alerts: dict[int, GridAlertMessage] = {}
        self._alerts_loaded = False
        self._position: tuple[int, int] | None = None
        self._saved: tuple[int, int] | None = None
        self._position_name = f"{POSITION_PREFIX}:{deployment.chain_id}:{deployment.address.lower()}"

    @property
    def tariff(self) -> TariffInfo:
        """The tariff in force now, with this period's prices."""
        return tariff_at(self.index.schedule, int(time.time()))

    def _period_of(self, meter: str) -> tuple[int, int, int] | None:
        """(start, import and export registers at the start) of the meter's open billing period."""
        known = self._periods.get(meter)
        if known is None:
            record = self.index.meter(meter)
            if record is None:
                return None
            p = record.period
            known = (p.period_start, record.last_energy_wh - p.energy_wh, record.last_export_wh - p.export_wh)
            self._periods[meter] = known
        return known

    def _bill(self, event: ChainEvent) -> Bill:
        """The live bill a ``ReadingRecorded`` event makes: the chain's import cost and export credit,
        the standing charge since the period began (it depends only on time) and the amount due."""
        args = event.args
        meter, ts = args["meter"], int(args["timestamp"])
        start, start_import, start_export = self._period_of(meter.lower()) or (ts, int(args["energyWh"]),
                                                                               int(args["exportWh"]))
        cost, credit = int(args["periodImportCost"]), int(args["periodExportCredit"])
        standing = standing_charge(self.index.schedule.versions, start, ts)
        return Bill(
            meter=meter, seq=int(args["seq"]), tx_hash=event.tx_hash, block=event.block,
            energy_wh=int(args["energyWh"]), export_wh=int(args["exportWh"]),
            period_energy_wh=int(args["energyWh"]) - start_import,
            period_export_wh=int(args["exportWh"]) - start_export,
            energy_cost=cost, export_credit=credit, standing_charge=standing, amount_due=cost + standing - credit,
            tariff=tariff_at(self.index.schedule, ts),
        )

    def stop(self) -> None:
        """Stop following the chain (from any thread); events already fetched are still relayed."""
        self._stopping = True
        loop, task = self._thread_loop, self._thread_task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)

    @property
    def position(self) -> tuple[int, int]:
        """The last processed (block, log index)."""
        if self._position is None:
            saved = self.store.position(self._position_name)
            self._position = self._saved = saved or (self.deployment.block - 1, -1)
        return self._position

    def save_position(self) -> None:
        """Write the position to the store if it moved since it was last written (a failed write is tried again
        the next time: at worst a few events are relayed twice after a crash)."""
        if self._position is not None and self._position != self._saved:
            try:
                self.store.set_position(self._position_name, *self._position)
            except sqlite3.Error as err:
                log_event(log, "relay_position_not_saved", logging.WARNING, error=f"{type(err).__name__}: {err}"[:300])
                return
            self._saved = self._position

    def _reached(self, head: int) -> None:
        """Every log up to block ``head`` was fetched and handed over."""
        self.head = head
        self.save_position()

    async def run(self) -> None:
        """Follow the chain until stopped: logs are read in the relay's own thread, events handled here."""
        self._main_loop = asyncio.get_running_loop()
        self.position  # noqa: B018 - read here: the store's connection belongs to this thread
        await run_in_own_thread("relay", self._follow_forever, self.stop)
        self.save_position()

    def _to_main(self, callback: Callable[..., None], *args: Any) -> None:
        """Have the server's loop run ``callback(*args)``, after what was handed to it before."""
        loop = self._main_loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(callback, *args)
            except RuntimeError:  # the server's loop closed meanwhile: the server has stopped
                pass

    async def _follow_forever(self) -> None:
        """In the relay's thread: follow the chain, reconnecting with back-off, until stopped."""
        self._thread_loop, self._thread_task = asyncio.get_running_loop(), asyncio.current_task()
        backoff = Backoff(RECONNECT_FIRST, RECONNECT_CAP)
        try:
            while not self._stopping:
                try:
                    await self._follow()
                    backoff.succeeded()
                except Exception as err:  # noqa: BLE001 - any failure means reconnect and catch up
                    self._to_main(self._disconnected)
                    delay = backoff.failed()
                    log_event(log, "relay_disconnected", logging.WARNING,
                              error=f"{type(err).__name__}: {err}"[:300], retry_in=f"{delay:.1f}s",
                              url=self.settings.chain_ws_url)
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            pass  # stop(): what was fetched is already handed over
        finally:
            self._thread_loop = self._thread_task = None

    def _disconnected(self) -> None:
        self.connected.clear()
        self.caught_up.clear()

    def _connected(self) -> None:
        self.connected.set()
        self._events_at_connect = self.events_processed

    def _caught_up(self, head: int) -> None:
        self._reached(head)
        self.caught_up.set()
        log_event(log, "relay_caught_up", head=head, events=self.events_processed - self._events_at_connect,
                  position=f"{self.position[0]}:{self.position[1]}")

    async def _follow(self) -> None:
        """In the relay's thread: catch up from the position, then fetch each new block's logs."""
        async with RpcSocket(self.settings.chain_ws_url) as rpc:
            address = self.deployment.address
            await rpc.request("eth_subscribe", ["newHeads"])
            self._to_main(self._connected)
            complete = await self._catch_up(rpc, address)
            self._to_main(self._caught_up, complete)
            while True:
                head = int((await rpc.notification())["number"], 16)
                while rpc.pending_notifications():
                    head = max(head, int((await rpc.notification())["number"], 16))
                if head > complete:
                    async for logs in logs_between(rpc.request, address, complete + 1, head):
                        self._take(logs)
                    complete = head
                self._to_main(self._reached, complete)

    def _take(self, logs: list[Any]) -> None:
        """In the relay's thread: report the batches these logs show mined, then hand the logs over."""
        if self.mined_listeners:
            outcomes = self.decoder.batch_outcomes(logs)
            if outcomes:
                for listener in self.mined_listeners:
                    listener(outcomes)
        if logs:
            self._to_main(self._handle_logs, logs)

    def recorded(self, meter: str, seq: int) -> bool:
        """Whether the relay has seen this reading recorded on chain (among the last ``RECENT_LIMIT``)."""
        return (meter.lower(), seq) in self._registers

    def alerts_for(self, region: str, now: float) -> list[GridAlertMessage]:
        """Active, unexpired alerts that concern ``region`` (sent to a meter after login)."""
        return [a for a in self.active_alerts.values() if a.expires_at > now and (not a.region or a.region == region)]

    async def _load_alerts(self, rpc: RpcSocket, address: str, head: int) -> None:
        """In the relay's thread: fetch the whole log's alerts (raised before our position) for the active set."""
        topics = [self.decoder.topic("GridAlert"), self.decoder.topic("GridAlertCleared")]
        async for logs in logs_between(rpc.request, address, self.deployment.block, head, [topics]):
            self._to_main(self._load_alert_logs, logs)
        self._alerts_loaded = True

    def _load_alert_logs(self, logs: list[Any]) -> None:
        for raw in logs:
            event = self.decoder.decode(raw)
            if event is not None and event.position <= self.position:
                self._track_alert(event)

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
        """In the relay's thread: fetch every log from the position to the head; returns the head.

        The position may be a little behind what the server's loop has yet to handle; logs at or
        before the position it reaches are skipped there, so fetching some twice is harmless.
        """
        head = int(await rpc.request("eth_blockNumber", []), 16)
        if not self._alerts_loaded:
            await self._load_alerts(rpc, address, head)
        block, _ = self.position
        async for logs in logs_between(rpc.request, address, max(block, self.deployment.block), head):
            self._take(logs)
            self._to_main(self.save_position)
        return head

    def _handle_logs(self, logs: list[Any]) -> None:
        """Relay each new event of fetched logs, in chain order."""
        for raw in logs:
            try:
                self._handle_log(raw)
            except Exception as err:  # noqa: BLE001 - one bad event must not hold up the others
                log_event(log, "relay_event_failed", logging.ERROR, error=f"{type(err).__name__}: {err}"[:300],
                          block=raw.get("blockNumber"), log_index=raw.get("logIndex"))

    def _handle_log(self, raw: Any) -> None:
        event = self.decoder.decode(raw)
        if event is None or event.position <= self.position:
            return
        try:
            self._dispatch(event)
            for listener in self.listeners:
                listener(event)
        finally:
            self._position = event.position
            self.events_processed += 1

    def _dispatch(self, event: ChainEvent) -> None:
        args = event.args
        name = event.name
        if name == "ReadingRecorded":
            meter, seq = args["meter"], int(args["seq"])
            self._registers[(meter.lower(), seq)] = int(args["energyWh"])
            if len(self._registers) > RECENT_LIMIT:
                self._registers.popitem(last=False)
            self.hub.send(meter, encode(self._bill(event)))
        elif name == "MeterRegistered":
            self._periods[args["meter"].lower()] = (int(args["openedAt"]), int(args["openingWh"]), 0)
        elif name == "BillIssued":
            key = args["meter"].lower()
            start = self._period_of(key)
            if start is not None:
                self._periods[key] = (int(args["periodEnd"]), start[1] + int(args["importWh"]),
                                      start[2] + int(args["exportWh"]))
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
            log_event(log, "tariff_changed", version=int(args["version"]), effective_from=int(args["effectiveFrom"]),
                      standing=int(args["standingCharge"]), import_kind=int(args["importKind"]),
                      export_kind=int(args["exportKind"]))
        elif name == "MeterDeactivated":
            meter = args["meter"]
            notice = ErrorMessage(code="meter_inactive", message="this meter was deactivated by the operator")
            self.hub.send(meter, encode(notice))
            log_event(log, "meter_deactivated", meter=meter)


def tariff_at(schedule: Schedule, t: int) -> TariffInfo:
    """The tariff in force at ``t`` with the import and export prices of its period."""
    if not schedule.versions:
        return TariffInfo(unit_rate=0, standing_charge=0)
    number = schedule.version_index_at(t) + 1
    import_price, export_price = schedule.prices(t // 1_800)
    return TariffInfo(unit_rate=import_price, export_rate=export_price,
                      standing_charge=schedule.versions[number - 1].standing_charge, version=number)
