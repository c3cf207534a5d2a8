"""Live updates for the dashboard: a fan-out of what just happened to every subscriber that
may see it.

The indexer publishes bills, meter changes, tariffs, grid alerts and consumption alerts once
they are in the index; the hub publishes meters connecting and disconnecting; the messages API
publishes messages and read marks. Each update names the meter it concerns, or the meters of
the account it concerns (a message), or none, for what everybody may see; a subscriber limited
to one meter receives only that meter's updates and the public ones. A subscriber that falls
``max_queue`` updates behind is dropped (its page reconnects and reloads).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from common.logs import log_event

__all__ = ["Update", "Subscription", "LiveFeed"]

log = logging.getLogger("live")


@dataclass(frozen=True)
class Update:
    """One live update: its ``kind`` (bill, meter, connection, tariff, grid_alert, consumption_alert,
    message, messages_read), the meter it concerns, for a grid alert the region it concerns ("" for
    all), and for an update about an account the lower-case addresses of its meters."""

    kind: str
    meter: str | None
    payload: Any
    region: str = ""
    meters: frozenset[str] | None = None


class Subscription:
    """One subscriber's queue of updates; ``closed`` is set when it was dropped for falling behind."""

    def __init__(self, meter: str | None, region: str, max_queue: int) -> None:
        self.meter = meter.lower() if meter else None
        self.region = region
        self.queue: asyncio.Queue[Update] = asyncio.Queue(max_queue)
        self.closed = asyncio.Event()

    def wants(self, update: Update) -> bool:
        """Whether this subscriber may see the update."""
        if self.meter is None:
            return True
        if update.meters is not None:
            return self.meter in update.meters
        if update.meter is None:
            return not update.region or update.region == self.region
        return update.meter.lower() == self.meter


class LiveFeed:
    """Subscribers and publishing; used from the event loop only."""

    def __init__(self, max_queue: int = 1_000) -> None:
        self.max_queue = max_queue
        self.subscribers: set[Subscription] = set()

    def subscribe(self, meter: str | None, region: str = "") -> Subscription:
        """Start receiving updates: all of them, or one meter's and the public ones for its region."""
        sub = Subscription(meter, region, self.max_queue)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop receiving updates."""
        self.subscribers.discard(sub)

    def publish(self, kind: str, meter: str | None, payload: Any, region: str = "", *,
                meters: Iterable[str] | None = None) -> None:
        """Queue an update for every subscriber that may see it; given ``meters``, only theirs and the operator's."""
        if not self.subscribers:
            return
        update = Update(kind, meter, payload, region, None if meters is None else frozenset(m.lower() for m in meters))
        for sub in list(self.subscribers):
            if not sub.wants(update):
                continue
            try:
                sub.queue.put_nowait(update)
            except asyncio.QueueFull:
                log_event(log, "live_subscriber_dropped", logging.WARNING, meter=sub.meter or "all",
                          queued=sub.queue.qsize())
                self.subscribers.discard(sub)
                sub.closed.set()
