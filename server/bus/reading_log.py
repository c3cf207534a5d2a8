"""The gateway's side of the reading log on NATS JetStream: append a turn's readings, and find a
meter's last logged reading at login.

A gateway holds no state of its own: a reading is acknowledged to its meter only once the stream
has it (its publish acknowledgement, which with ``sync_interval: always`` or three replicas means
it is on disk or on a majority of the cluster). Each reading is published with its message id, so
a publish retried after a lost acknowledgement, or a meter resending to another gateway, is
dropped by the stream. A turn's readings are published at once on the one connection (NATS keeps
a connection's messages in order, so a meter's readings reach the stream in order) and then
awaited together.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from common import errors
from common.eip712 import ReadingData
from common.logs import log_event
from common.settings import Settings
from server.bus.subjects import STREAM, decode_reading, encode_reading, message_id, reading_subject
from server.endpoint.validation import Cursor
from server.writer.store import QueuedReading

__all__ = ["BusLog"]

log = logging.getLogger("bus")

#: Seconds a publish waits for the stream's acknowledgement (a leader election in a cluster takes a few).
PUBLISH_TIMEOUT = 10.0
#: Seconds a turn's publishes are tried again (a cluster electing a stream leader takes a few) before its meters
#: are disconnected to resend; and the pause between tries.
RETRY_FOR = 12.0
RETRY_EVERY = 0.5
#: How often the log's size is asked of the stream (for the queue's bound and ``/health``).
COUNT_EVERY = 2.0


class BusLog:
    """The reading log as a stateless gateway uses it."""

    def __init__(self, settings: Settings, nc: Client, js: JetStreamContext) -> None:
        self.settings = settings
        self.nc = nc
        self.js = js
        self._count = 0
        self._counter: asyncio.Task[None] | None = None
        #: Readings the stream dropped as already logged (a retried publish, a resend to another gateway).
        self.duplicates = 0
        #: Publishes tried again after no answer or an error (a leader election, a node gone).
        self.retries = 0

    def start(self) -> None:
        """Keep the log's size up to date in the background."""
        self._counter = asyncio.get_running_loop().create_task(self._keep_count())

    async def close(self) -> None:
        """Stop counting."""
        if self._counter is not None:
            self._counter.cancel()

    async def _keep_count(self) -> None:
        while True:
            try:
                info = await self.js.stream_info(STREAM)
                self._count = int(info.state.messages)
            except Exception as err:  # noqa: BLE001 - a count missed is asked again; the publishes say what fails
                log_event(log, "bus_count_failed", logging.DEBUG, error=str(err)[:200])
            await asyncio.sleep(COUNT_EVERY)

    # ---------------------------------------------------------------- what the gateway asks

    def count(self) -> int:
        """How many readings wait in the log (as last counted)."""
        return self._count

    def get(self, meter: str, seq: int) -> QueuedReading | None:
        """Nothing is held here: a resend is published again and the stream drops it by its id."""
        return None

    def restart_cursor(self, meter: str, cursor: Cursor) -> int:
        """Nothing is held here (the log's readings from before the restart are the chain's to refuse)."""
        return 0

    async def last_logged(self, meter: str) -> Cursor | None:
        """Where the meter's last reading still in the log leaves it (None when none waits there)."""
        try:
            raw = await self.js.get_last_msg(STREAM, reading_subject(meter, self.settings.bus_partitions))
        except NotFoundError:
            return None
        except (NatsTimeout, asyncio.TimeoutError) as err:
            raise errors.BusUnavailable("the reading log did not answer in time; reconnect in a moment") from err
        if raw.data is None:
            return None
        return decode_reading(raw.data).cursor

    async def append(self, readings: list[tuple[ReadingData, str, int]]) -> None:
        """Publish a turn's readings and wait until the stream holds every one (raises ``BusUnavailable`` if it
        does not say so in time: nothing of the turn is then acknowledged to its meters)."""
        if not readings:
            return
        partitions = self.settings.bus_partitions
        deadline = time.monotonic() + RETRY_FOR
        waiting = readings
        while True:
            sends = [self.js.publish(reading_subject(d.meter, partitions), encode_reading(d, sig, prev),
                                     timeout=PUBLISH_TIMEOUT, headers={"Nats-Msg-Id": message_id(d)})
                     for d, sig, prev in waiting]
            # Started in order, so the requests go out in order on the one connection.
            acks = await asyncio.gather(*(asyncio.ensure_future(s) for s in sends), return_exceptions=True)
            self.duplicates += sum(1 for a in acks if not isinstance(a, BaseException) and a.duplicate)
            failed = [(r, a) for r, a in zip(waiting, acks, strict=True) if isinstance(a, BaseException)]
            if not failed:
                return
            if time.monotonic() >= deadline:
                err = failed[0][1]
                raise errors.BusUnavailable(f"the reading log did not take {len(failed)} of {len(readings)} "
                                            f"readings ({type(err).__name__}: {str(err)[:200]})")
            # A stream electing a new leader answers nobody for a few seconds: the same ids again (the stream drops
            # any it did take), rather than sending the meters away.
            self.retries += len(failed)
            await asyncio.sleep(RETRY_EVERY)
            waiting = [r for r, _ in failed]
