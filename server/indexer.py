"""Feeds the index from the chain and tells the dashboard and the meters what changed.

On start it catches up with ``eth_getLogs`` from its own recorded position to the chain's
head; from then on it takes the events the relay follows live (a relay listener), applies
whatever has arrived in one transaction, and publishes the result: bills, meter changes,
tariffs and grid alerts to the live feed, consumption alerts to the live feed and to the
meter concerned. ``rebuild`` empties the index and replays the whole chain into it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

from common.chain import AsyncChainClient, logs_between
from common.deployment import Deployment
from common.events import ChainEvent, EventDecoder
from common.logs import log_event
from common.messages import encode
from common.settings import Settings
from server.hub import Hub
from server.index import TIME_EVENTS, Applied, Index
from server.live import LiveFeed

__all__ = ["Indexer", "ALERT_FRESHNESS", "rebuild"]

log = logging.getLogger("indexer")

#: A consumption alert about a reading older than this (catching up, rebuilding) is stored, not sent.
ALERT_FRESHNESS = 900
BLOCK_TIME_CACHE = 4_096


class Indexer:
    """Keeps ``index`` up to date with the contract's events."""

    def __init__(self, deployment: Deployment, index: Index, chain: AsyncChainClient,
                 hub: Hub | None = None, feed: LiveFeed | None = None) -> None:
        self.deployment = deployment
        self.index = index
        self.chain = chain
        self.hub = hub
        self.feed = feed
        self.decoder = EventDecoder(deployment.abi)
        self._queue: asyncio.Queue[ChainEvent | None] = asyncio.Queue()
        self._block_times: OrderedDict[int, int] = OrderedDict()
        #: The last failure to apply events, as (unix time, error), for ``/health``.
        self.last_failure: tuple[float, str] | None = None

    # ---------------------------------------------------------------- feeding

    async def catch_up(self) -> int:
        """Apply every event from the index's position to the chain's head; returns how many."""
        head = int(await self.chain.request("eth_blockNumber", []), 16)
        position = self.index.position()
        start = max(position[0] if position else 0, self.deployment.block)
        applied = 0
        started = time.monotonic()
        async for logs in logs_between(self.chain.request, self.deployment.address, start, head):
            events = [e for e in (self.decoder.decode(raw) for raw in logs) if e is not None]
            applied += (await self._apply(events)).events
        log_event(log, "index_caught_up", head=head, events=applied, seconds=f"{time.monotonic() - started:.1f}")
        return applied

    def on_event(self, event: ChainEvent) -> None:
        """Relay listener: queue a live event for the next transaction."""
        self._queue.put_nowait(event)

    @property
    def backlog(self) -> int:
        """Events relayed but not yet applied."""
        return self._queue.qsize()

    def stop(self) -> None:
        """Apply what is queued, then return from ``run``."""
        self._queue.put_nowait(None)

    async def run(self) -> None:
        """Apply queued events as they come, several at a time, until stopped."""
        while True:
            first = await self._queue.get()
            batch = [first]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            events = [e for e in batch if e is not None]
            if events:
                try:
                    await self._apply(events)
                except Exception as err:  # noqa: BLE001 - the index is a cache: log, catch up later
                    self.last_failure = (time.time(), f"{type(err).__name__}: {err}"[:300])
                    log_event(log, "index_apply_failed", logging.ERROR, error=f"{type(err).__name__}: {err}"[:300],
                              hint="the index catches up from the chain at the next start")
            if None in batch:
                return

    async def _apply(self, events: list[ChainEvent]) -> Applied:
        times = {e.block: await self._block_time(e.block) for e in events if e.name in TIME_EVENTS}
        applied = self.index.apply(events, times)
        self._publish(applied)
        return applied

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
    index open and would go on writing to it.
    """
    index.reset()
    chain = AsyncChainClient(settings, deployment, settings.gateway_key)
    try:
        return await Indexer(deployment, index, chain).catch_up()
    finally:
        await chain.close()
