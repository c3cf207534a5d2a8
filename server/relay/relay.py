"""Relays the contract's events to meters: bills to their meter, rejections as errors, grid
alerts to every meter (or a region's); and follows the chain's blocks, so that everyone knows
what is final and hears at once when blocks they took into account were replaced.

Subscribes to new blocks over the chain's WebSocket (``eth_subscribe newHeads``) and fetches
the contract's logs of each new block with one ``eth_getLogs`` (a node pushing every log as
its own notification spends more on it than on mining, under load). The logs are read in a
thread of the relay's own (see ``server.writer.threads``), which tells the batcher at once which of its
batches were mined, and are handed to the server's loop to be relayed and indexed there.

**Finality.** A block is final once ``CONFIRMATIONS`` blocks are on top of it (0: at once, as on
the local automining chain). A bill is sent when its event is first seen: as provisional
(``final: false``) to meters that speak version 3 while its block is not final, and as final
(``final: true``; without the field to older meters, which get only final bills) when it is.
A rejection is told to the meter only once final. The batcher is told which blocks are final
(its readings stay queued until then) and so is every ``ChainFollower`` (the indexer).

**Reorganisations.** The hashes of recent blocks are kept (``server.relay.blocktrail``): every new
head must name the last one as its parent, and every log's block hash must agree with what is
known. When not, the relay asks the node for the hashes of the blocks it knows, newest first,
until one agrees (the fork), reads the new chain from there, and tells the batcher (readings of
vanished batches go back to pending, unless their transaction is mined again on the new chain)
and every follower (the index undoes what it recorded past the fork) before the new chain's
events. A fork below the final block (a reorganisation deeper than CONFIRMATIONS) is logged as
an error and followers repair themselves in full.

On every (re)connection it first catches up from the last final block, which it records in the
store with the trail of recent block hashes, so no event is missed across relay or chain
restarts and a chain replaced meanwhile is noticed. Events are processed strictly in chain
order; a log at or before the position reached is skipped. Events of blocks that were not yet
final when the server stopped are relayed again after a restart (as provisional bills, then
final ones), which meters take as the same bill twice, never as a missed one.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from common.backoff import Backoff
from common.billing import from_text32
from common.chain import logs_between
from common.deployment import Deployment
from common.events import BatchOutcome, ChainEvent, EventDecoder, unpack_record
from common.logs import log_event
from common.messages import Bill, ErrorMessage, GridAlertMessage, TariffInfo, encode
from common.rpc_socket import RpcSocket
from common.settings import Settings
from common.tariff import REJECT_ERRORS, RejectReason, Schedule, standing_charge
from server.bus.hub import Hub
from server.endpoint.validation import Cursor
from server.indexing.index import Index
from server.relay.blocktrail import BlockTrail
from server.writer.store import Store
from server.writer.threads import run_in_own_thread

__all__ = ["Relay", "ChainFollower", "LAST_LOG", "tariff_at"]

log = logging.getLogger("relay")
#: The store keeps the relay's position per contract, so that a redeployed contract is followed from its
#: own first block rather than from where the old one's log had got to.
POSITION_PREFIX = "relay"
RECENT_LIMIT = 100_000
#: Waits before reconnecting to the chain: from this, doubling, up to the cap (seconds).
RECONNECT_FIRST, RECONNECT_CAP = 0.5, 10.0
#: A log index past any block's last: (block, LAST_LOG) is "all of the block".
LAST_LOG = 2**31 - 1


class ChainFollower(Protocol):
    """What a consumer of the relay's events hears (called in the server's loop, in chain order)."""

    def on_event(self, event: ChainEvent) -> None:
        """A contract event, first seen."""

    def on_final(self, block: int) -> None:
        """Blocks up to ``block`` are final (said before the events of those blocks not yet told)."""

    def on_rollback(self, fork: int, deep: bool) -> None:
        """Blocks after ``fork`` were replaced: undo what they brought (``deep``: some of it was final)."""


def _bill_for(bill: Bill, final: bool, version: int) -> str | None:
    """A bill as a meter of protocol ``version`` gets it: with ``final`` from version 3; before it, final bills
    only, without the field they do not know."""
    if version >= 3:
        return encode(bill.model_copy(update={"final": final}))
    return encode(bill) if final else None


class ChainReplaced(Exception):
    """The chain read so far was replaced under the relay (a reorganisation)."""


@dataclass
class _Recorded:
    """A reading the relay saw recorded: its register and block."""

    energy_wh: int
    block: int


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
        self.confirmations = settings.finality_depth
        self.decoder = EventDecoder(deployment.abi)
        #: Told every event, finality and rollback, in the server's loop.
        self.followers: list[ChainFollower] = []
        #: Told which batches each fetch of logs shows mined, before their events are relayed; called in the
        #: relay's thread.
        self.mined_listeners: list[Callable[[dict[str, BatchOutcome]], None]] = []
        #: Told that blocks up to a number are final; called in the relay's thread.
        self.final_listeners: list[Callable[[int], None]] = []
        #: Told that blocks after a fork were replaced, with the batches the new chain shows mined (up to its
        #: head at the time); called in the relay's thread, before the new chain's events.
        self.rollback_listeners: list[Callable[[int, dict[str, BatchOutcome]], None]] = []
        #: Told that a meter's register and sequence restarted on chain (``RegisterReset``, or the new meter of a
        #: ``MeterExchanged``), with the cursor it restarts from; called in the server's loop.
        self.restart_listeners: list[Callable[[str, Cursor], None]] = []
        self._registers: OrderedDict[tuple[str, int], _Recorded] = OrderedDict()
        self._stopping = False
        self._main_loop: asyncio.AbstractEventLoop | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_task: asyncio.Task[None] | None = None
        self._events_at_connect = 0
        self.connected = asyncio.Event()
        self.caught_up = asyncio.Event()
        self.events_processed = 0
        self.reorganisations = 0
        #: The newest block whose logs were fetched and handed over (for ``/health``).
        self.head: int | None = None
        #: The newest final block (None until the relay has read the chain).
        self.final: int | None = None
        self.active_alerts: dict[int, GridAlertMessage] = {}
        self._alert_blocks: dict[int, int] = {}
        self._alerts_loaded = False
        self._position: tuple[int, int] | None = None
        self._saved: tuple[int, int] | None = None
        self._position_name = f"{POSITION_PREFIX}:{deployment.chain_id}:{deployment.address.lower()}"
        #: Messages held until their block is final: block -> [(meter, the message by protocol version)].
        self._unfinal: OrderedDict[int, list[tuple[str, Callable[[int], str | None]]]] = OrderedDict()
        # In the relay's thread: the trail of block hashes, how far logs are read, the final block told.
        self._trail: BlockTrail | None = None
        # In the server's loop: the trail as the thread last handed it over, and as last written to the store.
        self._trail_items: list[tuple[int, str]] = []
        self._saved_trail: dict[int, str] = {}
        self._complete = deployment.block - 1
        self._final_told = -1

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
        """Write the final part of the position, and the trail of recent blocks, to the store if they moved
        (a failed write is tried again the next time: at worst a few events are relayed twice after a crash)."""
        if self._position is None or self.final is None:
            return
        position = min(self._position, (self.final, LAST_LOG))
        trail = dict(self._trail_items)
        if position == self._saved and trail == self._saved_trail:
            return
        try:
            self.store.save_relay_state(self._position_name, position, trail, self._saved_trail)
        except sqlite3.Error as err:
            log_event(log, "relay_position_not_saved", logging.WARNING, error=f"{type(err).__name__}: {err}"[:300])
            return
        self._saved, self._saved_trail = position, trail

    async def run(self) -> None:
        """Follow the chain until stopped: logs are read in the relay's own thread, events handled here."""
        self._main_loop = asyncio.get_running_loop()
        # Read here: the store's connection belongs to this thread.
        self._complete = max(self.position[0], self.deployment.block) - 1
        self._final_told = self.final if self.final is not None else self.position[0]
        if self._trail is None:
            self._trail_items = self.store.relay_trail(self._position_name)
            self._saved_trail = dict(self._trail_items)
            self._trail = BlockTrail(self._trail_items)
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

    # ---------------------------------------------------------------- the relay's thread

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

    async def _follow(self) -> None:
        """In the relay's thread: catch up from the position, then fetch each new block's logs."""
        async with RpcSocket(self.settings.chain_ws_url) as rpc:
            await rpc.request("eth_subscribe", ["newHeads"])
            self._to_main(self._connected)
            head = await self._catch_up(rpc)
            self._to_main(self._caught_up, head)
            while True:
                heads = [await rpc.notification()]
                while rpc.pending_notifications():
                    heads.append(await rpc.notification())
                try:
                    await self._advance(rpc, heads)
                except ChainReplaced as replaced:
                    await self._reorganise(rpc, str(replaced))

    async def _catch_up(self, rpc: RpcSocket) -> int:
        """In the relay's thread: check the blocks known still stand, then fetch every log up to the head.

        The position may be a little behind what the server's loop has yet to handle; logs at or
        before the position it reaches are skipped there, so fetching some twice is harmless.
        """
        head = int(await rpc.request("eth_blockNumber", []), 16)
        if not self._alerts_loaded:
            await self._load_alerts(rpc, self.deployment.address, head)
        trail = self._trail_now()
        tip = trail.tip
        if tip is not None:
            block = await rpc.request("eth_getBlockByNumber", [hex(tip), False])
            if block is None or block["hash"].lower() != trail.hash_of(tip):
                await self._reorganise(rpc, f"block {tip} is no longer on the node's chain")
                return self._complete
        try:
            await self._read(rpc, self._complete + 1, head)
            await self._note_header(rpc, head)
        except ChainReplaced as replaced:
            await self._reorganise(rpc, str(replaced))
        return self._complete

    def _trail_now(self) -> BlockTrail:
        if self._trail is None:
            self._trail = BlockTrail()
        return self._trail

    async def _note_header(self, rpc: RpcSocket, number: int) -> None:
        """Record block ``number``'s hash from its header (the next head must name it as its parent)."""
        if number < self.deployment.block or number in self._trail_now():
            return
        header = await rpc.request("eth_getBlockByNumber", [hex(number), False])
        if header is None or not self._trail_now().add_head(number, header["hash"], header["parentHash"]):
            raise ChainReplaced(f"block {number} changed while it was read")

    async def _advance(self, rpc: RpcSocket, heads: list[dict[str, Any]]) -> None:
        """In the relay's thread: check new heads against the trail, then fetch their logs."""
        trail = self._trail_now()
        target = self._complete
        for header in sorted(heads, key=lambda h: int(h["number"], 16)):
            number = int(header["number"], 16)
            if number <= self._complete:
                known = trail.hash_of(number)
                if known is not None and known != header["hash"].lower():
                    raise ChainReplaced(f"block {number} was replaced")
                continue
            for missing in range(max(target, trail.tip or target) + 1, number):  # heads the node skipped
                await self._note_header(rpc, missing)
            if not trail.add_head(number, header["hash"], header["parentHash"]):
                raise ChainReplaced(f"block {number}'s parent is not the block {number - 1} read before")
            target = max(target, number)
        if target > self._complete:
            await self._read(rpc, self._complete + 1, target)

    async def _read(self, rpc: RpcSocket, start: int, end: int) -> None:
        """In the relay's thread: fetch the logs of blocks ``start``..``end``, check and hand them over."""
        final = end - self.confirmations
        trail = self._trail_now()
        if end >= start:
            async for logs in logs_between(rpc.request, self.deployment.address, max(start, self.deployment.block),
                                           end):
                for raw in logs:
                    if raw.get("removed"):
                        raise ChainReplaced(f"a log of block {int(raw['blockNumber'], 16)} was removed")
                    if not trail.add_log_block(int(raw["blockNumber"], 16), raw["blockHash"]):
                        raise ChainReplaced(f"block {int(raw['blockNumber'], 16)} was replaced while it was read")
                self._take(logs, final)
        self._complete = max(self._complete, end)
        self._tell_final(final)
        trail.prune(final)
        self._to_main(self._reached, self._complete, final, trail.items())

    def _tell_final(self, final: int) -> None:
        if final > self._final_told:
            self._final_told = final
            for listener in self.final_listeners:
                listener(final)

    def _take(self, logs: list[Any], final: int) -> None:
        """In the relay's thread: report the batches these logs show mined, then hand the logs over."""
        if self.mined_listeners:
            outcomes = self.decoder.batch_outcomes(logs)
            if outcomes:
                for listener in self.mined_listeners:
                    listener(outcomes)
        self._to_main(self._handle_logs, logs, final)

    async def _reorganise(self, rpc: RpcSocket, why: str) -> None:
        """In the relay's thread: find where the chain read so far and the node's part, tell everyone to go
        back there, and read the new chain from it."""
        trail = self._trail_now()
        fork: int | None = None
        for number in trail.fork_candidates():
            block = await rpc.request("eth_getBlockByNumber", [hex(number), False])
            if block is not None and block["hash"].lower() == trail.hash_of(number):
                fork = number
                break
        if fork is None:  # none of the blocks known stands: older than the trail reaches
            fork = min(trail.fork_candidates(), default=self.deployment.block) - 1
        fork = max(fork, self.deployment.block - 1)
        deep = fork < self._final_told
        depth = self._complete - fork
        self.reorganisations += 1
        log_event(log, "chain_reorganised", logging.ERROR if deep else logging.WARNING, fork=fork, depth=depth,
                  why=why, confirmations=self.confirmations, final=self._final_told,
                  **({"hint": "deeper than CONFIRMATIONS: what was final changed; the index is rebuilt and "
                              "readings of vanished batches submitted again; raise CONFIRMATIONS"} if deep else {}))
        trail.truncate(fork)
        self._complete = fork
        if deep:
            self._final_told = fork
        head = int(await rpc.request("eth_blockNumber", []), 16)
        await self._note_header(rpc, head)
        new_logs: list[Any] = []
        async for logs in logs_between(rpc.request, self.deployment.address, max(fork + 1, self.deployment.block),
                                       head):
            for raw in logs:
                if not trail.add_log_block(int(raw["blockNumber"], 16), raw["blockHash"]):
                    raise ChainReplaced(f"block {int(raw['blockNumber'], 16)} was replaced again")
            new_logs.extend(logs)
        remined = self.decoder.batch_outcomes(new_logs)
        for listener in self.rollback_listeners:
            listener(fork, remined)
        self._to_main(self._rolled_back, fork, deep)
        final = head - self.confirmations
        if new_logs:
            self._take(new_logs, final)
        self._complete = head
        self._tell_final(final)
        self._to_main(self._reached, head, final, trail.items())

    # ---------------------------------------------------------------- the server's loop

    def _disconnected(self) -> None:
        self.connected.clear()
        self.caught_up.clear()

    def _connected(self) -> None:
        self.connected.set()
        self._events_at_connect = self.events_processed

    def _caught_up(self, head: int) -> None:
        self.caught_up.set()
        log_event(log, "relay_caught_up", head=head, final=self.final,
                  events=self.events_processed - self._events_at_connect,
                  position=f"{self.position[0]}:{self.position[1]}")

    def _reached(self, head: int, final: int, trail: list[tuple[int, str]]) -> None:
        """Every log up to block ``head`` was fetched and handed over; blocks up to ``final`` are final."""
        self.head = head
        self._advance_final(final)
        self._trail_items = trail
        self.save_position()

    def settled(self, meter: str, seq: int) -> bool:
        """Whether the relay has seen this reading recorded in a final block (among the last ``RECENT_LIMIT``)."""
        recorded = self._registers.get((meter.lower(), seq))
        return recorded is not None and self.final is not None and recorded.block <= self.final

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
        self._alert_blocks[alert.id] = event.block
        return alert

    def _advance_final(self, final: int) -> None:
        """Blocks up to ``final`` are final: tell the followers, send what waited for it."""
        if self.final is not None and final <= self.final:
            return
        self.final = final
        for follower in self.followers:
            follower.on_final(final)
        while self._unfinal:
            block = next(iter(self._unfinal))
            if block > final:
                break
            for meter, render in self._unfinal.pop(block):
                self.hub.send_versioned(meter, render)

    def _handle_logs(self, logs: list[Any], final: int) -> None:
        """Relay each new event of fetched logs, in chain order (blocks up to ``final`` are final)."""
        self._advance_final(final)
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
            for follower in self.followers:
                follower.on_event(event)
        finally:
            self._position = event.position
            self.events_processed += 1

    def _when_final(self, event: ChainEvent, meter: str, render: Callable[[int], str | None]) -> None:
        """Send ``meter`` what ``render`` makes for its version now if the event's block is final, or once it is."""
        if self.final is not None and event.block <= self.final:
            self.hub.send_versioned(meter, render)
        else:
            self._unfinal.setdefault(event.block, []).append((meter, render))

    def _dispatch(self, event: ChainEvent) -> None:
        args = event.args
        name = event.name
        if name == "ReadingRecorded":
            meter, seq = args["meter"], int(args["seq"])
            self._registers[(meter.lower(), seq)] = _Recorded(int(args["energyWh"]), event.block)
            if len(self._registers) > RECENT_LIMIT:
                self._registers.popitem(last=False)
            bill = self._bill(event)
            if self.final is None or event.block > self.final:
                self.hub.send_versioned(meter, partial(_bill_for, bill, False))
            self._when_final(event, meter, partial(_bill_for, bill, True))
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
            if reason is RejectReason.SEQUENCE_GAP:
                # Not a refusal of the reading: the batcher submits it again after its predecessor.
                log_event(log, "reading_out_of_order_on_chain", logging.WARNING, meter=meter, seq=seq,
                          block=event.block)
                return
            err = REJECT_ERRORS[reason](f"the chain rejected reading {seq}: {reason.name.lower()}", seq=seq)
            log_event(log, "reading_rejected_on_chain", logging.WARNING, meter=meter, seq=seq, code=err.code,
                      block=event.block)
            # Told once final: a meter drops a rejected reading, which a replaced block could still undo.
            rejection = encode(ErrorMessage(code=err.code, message=err.message, seq=seq))
            self._when_final(event, meter, lambda version: rejection)
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
        elif name in ("MeterExchanged", "RegisterReset"):
            self._restarted(event)
        elif name == "TariffWithdrawn":
            log_event(log, "tariff_withdrawn", version=int(args["version"]), effective_from=int(args["effectiveFrom"]))
        elif name == "MeterDeactivated":
            meter = args["meter"]
            notice = ErrorMessage(code="meter_inactive", message="this meter was deactivated by the operator")
            self.hub.send(meter, encode(notice))
            log_event(log, "meter_deactivated", meter=meter)

    def _restarted(self, event: ChainEvent) -> None:
        """A meter exchange or register reset: the open period's start registers move with the new register, the
        old sequence's recorded readings are forgotten, and the listeners (the gateway's cursors) are told."""
        args = event.args
        old = args["meter"]
        final = unpack_record(int(args["finalRecord"]))
        if event.name == "MeterExchanged":
            meter, opening = args["newMeter"], (int(args["openingImportWh"]), int(args["openingExportWh"]))
            notice = ErrorMessage(code="meter_inactive", message=f"this meter was exchanged for {meter}")
            self.hub.send(old, encode(notice))
        else:
            meter, opening = old, (int(args["importWh"]), int(args["exportWh"]))
        # Read before the index applies the event (it follows the relay), so the period as it was.
        known = self._period_of(old.lower())
        if known is not None:
            start, start_import, start_export = known
            self._periods[meter.lower()] = (start, start_import + opening[0] - final["energyWh"],
                                            start_export + opening[1] - final["exportWh"])
        for key in [k for k in self._registers if k[0] == old.lower()]:
            del self._registers[key]
        cursor = Cursor(0, final["timestamp"], *opening)
        for listener in self.restart_listeners:
            listener(meter, cursor)
        log_event(log, "meter_exchanged" if event.name == "MeterExchanged" else "register_reset", meter=old,
                  new_meter=meter, final_read_at=final["timestamp"], block=event.block)

    def _rolled_back(self, fork: int, deep: bool) -> None:
        """Blocks after ``fork`` were replaced: forget what they brought, and tell the followers."""
        self._position = min(self.position, (fork, LAST_LOG))
        for key in [k for k, r in self._registers.items() if r.block > fork]:
            del self._registers[key]
        for block in [b for b in self._unfinal if b > fork]:
            del self._unfinal[block]
        for alert_id in [i for i, b in self._alert_blocks.items() if b > fork]:
            self.active_alerts.pop(alert_id, None)
            del self._alert_blocks[alert_id]
        self._periods.clear()  # a billing period closed in a replaced block: read again from the index
        if deep and self.final is not None:
            self.final = min(self.final, fork)
        for follower in self.followers:
            follower.on_rollback(fork, deep)
        log_event(log, "relay_rolled_back", fork=fork, deep=deep, position=f"{self.position[0]}:{self.position[1]}")


def tariff_at(schedule: Schedule, t: int) -> TariffInfo:
    """The tariff in force at ``t`` with the import and export prices of its period."""
    if not schedule.versions:
        return TariffInfo(unit_rate=0, standing_charge=0)
    number = schedule.version_index_at(t) + 1
    import_price, export_price = schedule.prices(t // 1_800)
    return TariffInfo(unit_rate=import_price, export_rate=export_price,
                      standing_charge=schedule.versions[number - 1].standing_charge, version=number)
