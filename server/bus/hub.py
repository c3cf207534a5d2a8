"""The registry of logged-in meter connections, and ordered, bounded delivery to each.

Every connection has its own outgoing queue drained by one writer task, so a slow meter
delays only itself; when its queue is full the meter is disconnected (it resends what it
misses after reconnecting, from ``welcome``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed

from common.logs import log_event

__all__ = ["Hub", "Peer", "Outlet"]

log = logging.getLogger("hub")


class Outlet(Protocol):
    """What the hub needs of a connection."""

    async def send(self, message: str) -> None:
        """Send one text frame."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection."""


@dataclass(eq=False)
class Peer:
    """A logged-in meter connection."""

    meter: str
    region: str
    outlet: Outlet
    max_queue: int = 256
    #: The protocol version the connection speaks (``common.messages.protocol_version``).
    version: int = 1
    queue: asyncio.Queue[str] = field(init=False)
    ready: asyncio.Event = field(init=False)
    writer: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.max_queue)
        self.ready = asyncio.Event()

    async def _write(self) -> None:
        await self.ready.wait()
        while True:
            message = await self.queue.get()
            try:
                await self.outlet.send(message)
            except ConnectionClosed:
                return
            except OSError as err:
                log_event(log, "send_failed", logging.WARNING, meter=self.meter, error=str(err))
                return


class Hub:
    """Meter address (lower case) -> its peer; one peer per meter (a new login replaces the old)."""

    def __init__(self, max_queue: int = 256) -> None:
        self.peers: dict[str, Peer] = {}
        self.max_queue = max_queue
        #: Called with (meter, connected) when a meter logs in or its connection goes.
        self.listeners: list[Callable[[str, bool], None]] = []

    def _tell(self, meter: str, connected: bool) -> None:
        for listener in self.listeners:
            listener(meter, connected)

    def __len__(self) -> int:
        return len(self.peers)

    def add(self, meter: str, region: str, outlet: Outlet, version: int = 1) -> Peer | None:
        """Register a logged-in meter speaking protocol ``version``; returns the peer it replaced, if any.

        Messages for the meter queue up but are held until ``release``: the gateway registers the
        meter before reading its state for ``welcome``, so no event falls between the two.
        """
        peer = Peer(meter.lower(), region, outlet, self.max_queue, version)
        peer.writer = asyncio.get_running_loop().create_task(peer._write())
        old = self.peers.get(peer.meter)
        self.peers[peer.meter] = peer
        if old is None:
            self._tell(meter, True)
        return old

    def release(self, meter: str) -> None:
        """Start delivering the held messages of a meter (after its ``welcome`` was sent)."""
        peer = self.peers.get(meter.lower())
        if peer is not None:
            peer.ready.set()

    def remove(self, meter: str, outlet: Outlet) -> bool:
        """Forget a connection (only if it is still the meter's current one); whether it was."""
        peer = self.peers.get(meter.lower())
        if peer is None or peer.outlet is not outlet:
            return False
        del self.peers[meter.lower()]
        if peer.writer:
            peer.writer.cancel()
        self._tell(meter, False)
        return True

    def send(self, meter: str, message: str) -> bool:
        """Queue a message for a meter; False when it is not connected or was too slow."""
        peer = self.peers.get(meter.lower())
        if peer is None:
            return False
        try:
            peer.queue.put_nowait(message)
            return True
        except asyncio.QueueFull:
            log_event(log, "slow_meter_disconnected", logging.WARNING, meter=meter, queued=peer.queue.qsize())
            asyncio.get_running_loop().create_task(peer.outlet.close(1008, "too slow to receive"))
            return False

    def send_versioned(self, meter: str, render: Callable[[int], str | None]) -> bool:
        """Queue for a meter the message ``render`` makes for the protocol version its connection speaks (None:
        nothing for that version); rendered only when the meter is connected."""
        peer = self.peers.get(meter.lower())
        if peer is None:
            return False
        message = render(peer.version)
        return self.send(meter, message) if message is not None else False

    def broadcast(self, message: str, region: str = "") -> int:
        """Queue a message for every meter (or only those in ``region``); returns how many."""
        sent = 0
        for meter, peer in list(self.peers.items()):
            if region and peer.region != region:
                continue
            sent += self.send(meter, message)
        return sent

    async def close_all(self, code: int, reason: str) -> None:
        """Close every connection (on shutdown)."""
        peers = list(self.peers.values())
        await asyncio.gather(*(p.outlet.close(code, reason) for p in peers), return_exceptions=True)

    def snapshot(self) -> list[dict[str, Any]]:
        """Connected meters, for the API."""
        return [{"meter": p.meter, "region": p.region} for p in self.peers.values()]
