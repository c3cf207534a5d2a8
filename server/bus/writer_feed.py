"""A core's side of the reading log: hold a fair share of its partitions, feed their readings to
this core's batcher, and take each reading off the log once its own event is final.

Partitions are leased in the ``sm-leases`` bucket: key ``p<n>`` names the core that owns the
partition and lasts ``LEASE_TTL`` seconds unless renewed; each core renews its own ``core.<id>``
key too, so every core knows how many there are and takes at most its share (partitions /
cores, rounded up), giving back any above it. A core that dies stops renewing: its partitions
are free a few seconds later and the others take them. Taking a partition deletes its durable
consumer and makes it again, so that every reading the previous owner held and had not
acknowledged is delivered at once to the new one, whose batcher first settles them against their
own events on chain (the previous owner may have sent them; the contract's sequence rule records
a reading once whichever transaction comes first). The previous owner, if it is still alive but
lost its lease, drops the readings of that partition it had not sent.

A reading is acknowledged on the stream when it has left this core's queue, which happens only
once its block is final (``server.writer.batcher``): until then a crash of this core leaves it in the
log for the next owner.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyWrongLastSequenceError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from common.logs import log_event
from common.settings import Settings
from server.bus.connection import LEASE_TTL
from server.bus.subjects import STREAM, consumer_name, decode_reading, partition_of, partition_subject
from server.writer.batcher import Batcher
from server.writer.store import Store

__all__ = ["PartitionFeed", "fair_share"]

log = logging.getLogger("bus")

#: How often leases are renewed and settled readings acknowledged.
TICK = LEASE_TTL / 3
#: Readings fetched from a partition at once.
FETCH_BATCH = 500
#: Seconds a delivered reading may go unacknowledged before the stream delivers it again (to this core: it is
#: then a duplicate its queue leaves out). Long: a reading is acknowledged only when final.
ACK_WAIT = 600.0


def fair_share(partitions: int, cores: int) -> int:
    """The most partitions one of ``cores`` live cores should hold."""
    return math.ceil(partitions / max(cores, 1))


@dataclass
class _Held:
    """A partition this core owns."""

    number: int
    revision: int
    sub: Any = None
    task: asyncio.Task[None] | None = None
    #: (meter, seq) -> the message delivering it, until it is acknowledged.
    messages: dict[tuple[str, int], Msg] = field(default_factory=dict)
    #: The stream's last message when the partition was taken: readings up to it may have been sent by the
    #: previous owner (or this core's previous run), so they are settled against the chain first.
    logged_before: int = 0


class PartitionFeed:
    """Leases partitions of the reading log and feeds them to the batcher."""

    def __init__(self, settings: Settings, nc: Client, js: JetStreamContext, kv: KeyValue, store: Store,
                 batcher: Batcher, core: str) -> None:
        self.settings = settings
        self.nc = nc
        self.js = js
        self.kv = kv
        self.store = store
        self.batcher = batcher
        self.core = core
        self.held: dict[int, _Held] = {}
        self._alive_revision: int | None = None
        self._stopping = asyncio.Event()
        #: Readings taken off the log (acknowledged) and taken in (queued) since the start.
        self.acknowledged = 0
        self.taken_in = 0
        self.takeovers = 0

    def stop(self) -> None:
        """End ``run`` (the partitions' leases then lapse, and other cores take them)."""
        self._stopping.set()

    async def run(self) -> None:
        """Renew, balance and feed until stopped."""
        try:
            while not self._stopping.is_set():
                try:
                    await self._tick()
                except Exception as err:  # noqa: BLE001 - the bus may be away for a while: said, tried again
                    log_event(log, "partition_tick_failed", logging.WARNING, core=self.core,
                              error=f"{type(err).__name__}: {err}"[:300])
                try:
                    await asyncio.wait_for(self._stopping.wait(), TICK)
                except asyncio.TimeoutError:
                    pass
        finally:
            for number in list(self.held):
                await self._let_go(number, release=True)

    async def _tick(self) -> None:
        await self._say_alive()
        self._acknowledge_settled()
        self._revive_feeds()
        for number, held in list(self.held.items()):
            try:
                held.revision = await self.kv.update(f"p{number}", self.core.encode(), last=held.revision)
            except KeyWrongLastSequenceError:
                log_event(log, "partition_lost", logging.WARNING, core=self.core, partition=number,
                          reason="its lease lapsed and another core took it")
                await self._let_go(number, release=False)
        share = fair_share(self.settings.bus_partitions, await self._cores())
        for number in sorted(self.held, reverse=True)[:max(len(self.held) - share, 0)]:
            await self._let_go(number, release=True)
        if len(self.held) < share:
            for number in range(self.settings.bus_partitions):
                if len(self.held) >= share:
                    break
                if number not in self.held:
                    await self._try_take(number)

    async def _say_alive(self) -> None:
        key = f"core.{self.core}"
        try:
            self._alive_revision = (await self.kv.update(key, b"1", last=self._alive_revision)
                                    if self._alive_revision else await self.kv.create(key, b"1"))
        except KeyWrongLastSequenceError:
            self._alive_revision = await self.kv.put(key, b"1")

    async def _cores(self) -> int:
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return 1
        return max(sum(1 for k in keys if k.startswith("core.")), 1)

    async def _try_take(self, number: int) -> None:
        try:
            revision = await self.kv.create(f"p{number}", self.core.encode())
        except KeyWrongLastSequenceError:
            return  # another core holds it
        name = consumer_name(number)
        try:
            await self.js.delete_consumer(STREAM, name)
        except NotFoundError:
            pass
        await self.js.add_consumer(STREAM, ConsumerConfig(
            durable_name=name, filter_subject=partition_subject(number), ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL, ack_wait=ACK_WAIT, max_ack_pending=-1))
        held = _Held(number, revision, logged_before=int((await self.js.stream_info(STREAM)).state.last_seq))
        held.sub = await self.js.pull_subscribe_bind(durable=name, stream=STREAM)
        held.task = asyncio.get_running_loop().create_task(self._feed(held), name=f"partition-{number}")
        self.held[number] = held
        self.takeovers += 1
        log_event(log, "partition_taken", core=self.core, partition=number, held=len(self.held))

    def _revive_feeds(self) -> None:
        """Start again the feed of a held partition that ended (it must not: its readings would wait in the log)."""
        for held in self.held.values():
            task = held.task
            if task is None or not task.done():
                continue
            why = "cancelled" if task.cancelled() else repr(task.exception())
            log_event(log, "partition_feed_restarted", logging.ERROR, core=self.core, partition=held.number,
                      error=why[:300])
            held.task = asyncio.get_running_loop().create_task(self._feed(held), name=f"partition-{held.number}")

    async def _let_go(self, number: int, release: bool) -> None:
        """Stop feeding a partition; its readings not sent yet leave this core's queue (the next owner takes them
        from the log). ``release``: give the lease back at once rather than let it lapse."""
        held = self.held.pop(number, None)
        if held is None:
            return
        if held.task is not None:
            held.task.cancel()
        if held.sub is not None:
            try:
                await held.sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may be gone already
                pass
        meters = {m for m in self.store.queued_meters() if partition_of(m, self.settings.bus_partitions) == number}
        dropped = self.store.drop_unsent(meters)
        if release:
            try:
                await self.kv.delete(f"p{number}", last=held.revision)
            except Exception:  # noqa: BLE001 - it lapses by itself
                pass
        log_event(log, "partition_released", core=self.core, partition=number, dropped_unsent=dropped,
                  held=len(self.held))

    async def _feed(self, held: _Held) -> None:
        """Take the partition's readings into the queue as they come."""
        while True:
            try:
                msgs = await held.sub.fetch(FETCH_BATCH, timeout=1.0)
            except (NatsTimeout, asyncio.TimeoutError):
                continue
            except Exception as err:  # noqa: BLE001 - the bus may be away: said, and fetched again
                log_event(log, "partition_fetch_failed", logging.WARNING, partition=held.number,
                          error=f"{type(err).__name__}: {err}"[:300])
                await asyncio.sleep(1.0)
                continue
            try:
                self._take_in(held, msgs)
            except Exception as err:  # noqa: BLE001 - none is held: the stream delivers them again
                log_event(log, "partition_feed_failed", logging.ERROR, partition=held.number, readings=len(msgs),
                          error=f"{type(err).__name__}: {err}"[:300], action="they are delivered again shortly")
                for msg in msgs:
                    asyncio.get_running_loop().create_task(_nak(msg))
                await asyncio.sleep(1.0)

    def _take_in(self, held: _Held, msgs: list[Msg]) -> None:
        """Queue a fetch's readings and hold their messages until they leave the queue."""
        readings = []
        keyed: list[tuple[tuple[str, int], Msg]] = []
        earlier: set[str] = set()
        for msg in msgs:
            try:
                logged = decode_reading(msg.data)
            except ValueError as err:
                log_event(log, "log_message_dropped", logging.ERROR, partition=held.number, error=str(err))
                asyncio.get_running_loop().create_task(msg.term())
                continue
            keyed.append(((logged.data.meter, logged.data.seq), msg))
            readings.append((logged.data, logged.signature, logged.prev_timestamp))
            if msg.metadata.sequence.stream <= held.logged_before:
                earlier.add(logged.data.meter)
        taken = self.store.take_in(readings)
        held.messages.update(keyed)  # only now: one held but not queued would count as settled
        self.taken_in += len(taken)
        if earlier:
            self.batcher.check_first(earlier)
        if taken:
            self.batcher.notify()

    def _acknowledge_settled(self) -> None:
        """Acknowledge the held readings that have left the queue (final on chain, or settled already)."""
        queued = self.store.queued_keys()
        for held in list(self.held.values()):
            done = [key for key in held.messages if key not in queued]
            for key in done:
                msg = held.messages.pop(key)
                asyncio.get_running_loop().create_task(_ack(msg))
            self.acknowledged += len(done)


async def _nak(msg: Msg) -> None:
    """Ask for a message to be delivered again (if this fails, it is after ``ACK_WAIT``)."""
    try:
        await msg.nak(delay=1.0)
    except Exception as err:  # noqa: BLE001 - see above
        log_event(log, "log_nak_failed", logging.DEBUG, error=str(err)[:200])


async def _ack(msg: Msg) -> None:
    """Acknowledge one message (a lost acknowledgement only means it is delivered again, and left out)."""
    try:
        await msg.ack()
    except Exception as err:  # noqa: BLE001 - see above
        log_event(log, "log_ack_failed", logging.DEBUG, error=str(err)[:200])
