"""Feeds the index from the chain and tells the dashboard and the meters what changed.

On start it checks that the blocks it recorded but that were not final yet still stand (a
chain replaced while the server was stopped is undone back to the fork), then catches up with
``eth_getLogs`` from its own recorded position to the chain's head; from then on it follows the
relay (a ``ChainFollower``): it applies whatever events have arrived in one transaction, those of
blocks not yet final with an undo journal, forgets the journal of blocks as they become final,
and undoes the blocks the relay says were replaced. It publishes the result: bills, meter
changes, tariffs and grid alerts to the live feed, consumption alerts to the live feed and to
the meter concerned, and after a rollback the corrected bills. ``rebuild`` empties the index
and replays the whole chain into it; a replaced block that was already final is repaired so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from common.chain import AsyncChainClient, logs_between
from common.deployment import Deployment
from common.errors import StorageError
from common.events import ChainEvent, EventDecoder
from common.logs import log_event
from common.messages import encode
from common.settings import Settings
from server.api.live import LiveFeed
from server.bus.hub import Hub
from server.indexing.index import TIME_EVENTS, Applied, Index

__all__ = ["Indexer", "ALERT_FRESHNESS", "rebuild"]

log = logging.getLogger("indexer")

#: A consumption alert about a reading older than this (catching up, rebuilding) is stored, not sent.
ALERT_FRESHNESS = 900
BLOCK_TIME_CACHE = 4_096


@dataclass(frozen=True)
class _Final:
    """Blocks up to ``block`` are final."""

    block: int


@dataclass(frozen=True)
class _Rollback:
    """Blocks after ``fork`` were replaced (``deep``: some of them were final)."""

    fork: int
    deep: bool


class Indexer:
    """Keeps ``index`` up to date with the contract's events (a ``server.relay.relay.ChainFollower``)."""

    def __init__(self, deployment: Deployment, index: Index, chain: AsyncChainClient,
                 hub: Hub | None = None, feed: LiveFeed | None = None) -> None:
        self.deployment = deployment
        self.index = index
        self.chain = chain
        self.hub = hub
        self.feed = feed
        self.confirmations = chain.settings.finality_depth
        self.decoder = EventDecoder(deployment.abi)
        self._queue: asyncio.Queue[ChainEvent | _Final | _Rollback | None] = asyncio.Queue()
        self._block_times: OrderedDict[int, int] = OrderedDict()
        #: Meters whose bill in the index is provisional, by the block it is from (published again when final).
        self._provisional: dict[str, int] = {}
        #: The last failure to apply events, as (unix time, error), for ``/health``.
        self.last_failure: tuple[float, str] | None = None
        self.rollbacks = 0

    # ---------------------------------------------------------------- feeding

    async def catch_up(self) -> int:
        """Undo blocks replaced since the index last read the chain, then apply every event from the index's
        position to the chain's head; returns how many."""
        head = int(await self.chain.request("eth_blockNumber", []), 16)
        final = head - self.confirmations
        await self._check_recent_blocks()
        position = self.index.position()
        start = max(position[0] if position else 0, self.deployment.block)
        applied = 0
        started = time.monotonic()
        async for logs in logs_between(self.chain.request, self.deployment.address, start, head):
            events = [e for e in (self.decoder.decode(raw) for raw in logs) if e is not None]
            applied += (await self._apply(events, final)).events
        self._finalize(final)
        log_event(log, "index_caught_up", head=head, final=final, events=applied,
                  seconds=f"{time.monotonic() - started:.1f}")
        return applied

    async def _check_recent_blocks(self) -> None:
        """Undo what the index holds of blocks no longer on the node's chain (replaced while it was not reading)."""
        recent = self.index.recent_blocks()
        if not recent:
            return
        fork: int | None = None
        for number, block_hash in reversed(recent):
            block = await self.chain.request("eth_getBlockByNumber", [hex(number), False])
            if block is not None and block["hash"].lower() == block_hash.lower():
                fork = number
                break
        if fork == recent[-1][0]:
            return
        await self._roll_back(_Rollback(fork if fork is not None else recent[0][0] - 1, fork is None))

    def on_event(self, event: ChainEvent) -> None:
        """Relay follower: queue a live event for the next transaction."""
        self._queue.put_nowait(event)

    def on_final(self, block: int) -> None:
        """Relay follower: blocks up to ``block`` are final (events of those blocks need no journal)."""
        self._queue.put_nowait(_Final(block))

    def on_rollback(self, fork: int, deep: bool) -> None:
        """Relay follower: blocks after ``fork`` were replaced; undo them before the new chain's events."""
        self._queue.put_nowait(_Rollback(fork, deep))

    @property
    def backlog(self) -> int:
        """Events relayed but not yet applied."""
        return self._queue.qsize()

    def stop(self) -> None:
        """Apply what is queued, then return from ``run``."""
        self._queue.put_nowait(None)

    async def run(self) -> None:
        """Apply queued events as they come, several at a time, and the relay's word on finality and
        replaced blocks in their turn, until stopped."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            events: list[ChainEvent] = []
            for item in batch:
                if isinstance(item, ChainEvent):
                    events.append(item)
                    continue
                await self._apply_safely(events)
                events = []
                if isinstance(item, _Final):
                    self._finalize(item.block)
                elif isinstance(item, _Rollback):
                    await self._roll_back(item)
            await self._apply_safely(events)
            if None in batch:
                return

    async def _apply_safely(self, events: list[ChainEvent]) -> None:
        if not events:
            return
        try:
            await self._apply(events, self.index.final)
        except Exception as err:  # noqa: BLE001 - the index is a cache: log, catch up later
            self.last_failure = (time.time(), f"{type(err).__name__}: {err}"[:300])
            log_event(log, "index_apply_failed", logging.ERROR, error=f"{type(err).__name__}: {err}"[:300],
                      hint="the index catches up from the chain at the next start")

    async def _apply(self, events: list[ChainEvent], final: int | None) -> Applied:
        times = {e.block: await self._block_time(e.block) for e in events if e.name in TIME_EVENTS}
        applied = self.index.apply(events, times, final)
        self._publish(applied)
        return applied

    def _finalize(self, final: int) -> None:
        """Blocks up to ``final`` are final: drop their journal, and show bills that became final as such."""
        try:
            self.index.finalize(final)
        except Exception as err:  # noqa: BLE001 - the index is a cache: log, catch up later
            log_event(log, "index_finalize_failed", logging.ERROR, error=f"{type(err).__name__}: {err}"[:300])
            return
        settled = [m for m, block in self._provisional.items() if block <= final]
        for address in settled:
            del self._provisional[address]
            meter = self.index.meter(address)
            if meter is not None and self.feed is not None:
                self.feed.publish("bill", meter.address, meter)

    async def _roll_back(self, rollback: _Rollback) -> None:
        """Undo the blocks after the fork (or rebuild, when some were final) and publish the corrected bills."""
        self.rollbacks += 1
        for block in [b for b in self._block_times if b > rollback.fork]:
            del self._block_times[block]
        final = self.index.final
        if rollback.deep or (final is not None and rollback.fork < final):
            log_event(log, "index_rebuilt_after_deep_reorganisation", logging.ERROR, fork=rollback.fork, final=final,
                      hint="blocks already final were replaced: raise CONFIRMATIONS")
            self.index.reset()
            self._provisional.clear()
            await self.catch_up()
            meters = self.index.meters()
        else:
            meters = self.index.rollback(rollback.fork)
        for address in [a for a, block in self._provisional.items() if block > rollback.fork]:
            del self._provisional[address]
        if self.feed is not None:
            for meter in meters:
                self.feed.publish("bill", meter.address, meter)

    async def _block_time(self, block: int) -> int:
        cached = self._block_times.get(block)
        if cached is None:
            raw: dict[str, Any] = await self.chain.request("eth_getBlockByNumber", [hex(block), False])
            cached = int(raw["timestamp"], 16)
            self._block_times[block] = cached
            if len(self._block_times) > BLOCK_TIME_CACHE:
                self._block_times.popitem(last=False)
        return cached

    # ---------------------------------------------------------------- telling

    def _publish(self, applied: Applied) -> None:
        now = time.time()
        fresh = [(i, a) for i, a in applied.consumption_alerts if now - a.at <= ALERT_FRESHNESS]
        for _, alert in fresh:
            if self.hub is not None:
                self.hub.send(alert.meter, encode(alert))
            log_event(log, "consumption_alert", logging.WARNING, meter=alert.meter, kind=alert.kind,
                      energy_wh=alert.energy_wh, limit_wh=alert.limit_wh, power_w=alert.power_w)
        if self.confirmations:
            for meter in applied.bills:
                if not self.index.is_final(meter.last_block) and meter.last_block is not None:
                    self._provisional[meter.address.lower()] = meter.last_block
        feed = self.feed
        if feed is None or not feed.subscribers:
            return
        for meter in {m.address: m for m in applied.bills}.values():
            feed.publish("bill", meter.address, meter)
        for meter in applied.meters:
            feed.publish("meter", meter.address, meter)
        for tariff in applied.tariffs:
            feed.publish("tariff", None, tariff)
        for grid_alert in applied.grid_alerts:
            row = self.index.grid_alert(grid_alert["id"])  # a clearing carries only id and time
            if row is not None:
                feed.publish("grid_alert", None, row, row["region"])
        for alert_id, alert in fresh:
            feed.publish("consumption_alert", alert.meter, alert.model_dump() | {"id": alert_id})


async def rebuild(settings: Settings, deployment: Deployment, index: Index) -> int:
    """Empty ``index`` of everything derived from the chain and replay every event; returns how many.

    Hourly limits set by operators and customers are kept. Stop the server first: it holds the
    index open and would go on writing to it (a PostgreSQL index that another process writes is refused).
    """
    if not index.writer:
        raise StorageError(f"cannot rebuild the index at {index.location}: another process (a server) writes it; "
                           "stop every server that uses this INDEX_URL first")
    index.reset()
    chain = AsyncChainClient(settings, deployment, settings.gateway_key)
    try:
        return await Indexer(deployment, index, chain).catch_up()
    finally:
        await chain.close()
