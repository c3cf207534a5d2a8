"""Submits queued readings to the chain in batches, signing locally with the gateway key.

A batch is the oldest pending readings, up to ``batch_max_size``, sent as soon as one is
waiting (readings arriving meanwhile form the next batch, so batches grow under load by
themselves). Up to ``pipeline`` batches are in hand at once: while one is being mined the next
is built and signed, and goes out the moment the node has taken the first, so the chain is not
idle while the gateway learns the first's outcome. A meter's readings are in at most one of
them, so they reach the chain in order even when a batch fails. The gas limit comes from a
per-reading bound rather than ``eth_estimateGas``, which would make the node execute every
batch twice. A failed batch goes back to pending; readings the chain already
holds are dropped first, and the contract's sequence check makes a resubmitted reading
impossible to record twice.

The senders run in a thread of their own (see ``server.threads``), with their own event loop,
chain connection and database connection, so that a batch never waits behind meter traffic.

A batch is known to be mined from the relay, which fetches every block's logs anyway: a
``submitReadings`` transaction with reading events was mined and decided all its readings (a
reverted one emits none). Only when the relay has not reported it within ``confirm_wait`` does
the batcher ask the node for the receipt. A node spends about as long serialising a batch's
logs as mining it, so fetching them once rather than twice is the chain's time saved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from eth_utils import to_checksum_address

from common.backoff import Backoff
from common.batches import gas_limit_for, submit_readings_calldata
from common.chain import AsyncChainClient
from common.errors import ChainError, ChainUnavailable
from common.events import BatchOutcome, EventDecoder
from common.logs import log_event
from server.store import QueuedReading, Store
from server.threads import run_in_own_thread

__all__ = ["Batcher"]

log = logging.getLogger("batcher")

#: Outcomes the relay reported before the batcher asked for them (kept for the most recent only).
REPORTED_LIMIT = 1_000
#: Waits after a failed batch: from this, doubling, up to the cap (seconds).
RETRY_FIRST, RETRY_CAP = 0.5, 10.0


class Batcher:
    """The loop that drains the durable queue into ``submitReadings`` transactions."""

    def __init__(self, chain: AsyncChainClient, store: Store, connect: Callable[[], AsyncChainClient],
                 batch_max_size: int, batch_max_wait: float, pipeline: int = 2, confirm_wait: float = 2.0) -> None:
        """``chain`` and ``store`` serve ``reconcile`` in the caller's loop; ``connect`` makes the chain
        client of the senders' thread (an aiohttp session belongs to one loop)."""
        self.chain = chain
        self.store = store
        self._connect = connect
        self.batch_max_size = batch_max_size
        self.batch_max_wait = batch_max_wait
        self.pipeline = pipeline
        self.confirm_wait = confirm_wait
        self._decoder = EventDecoder(chain.deployment.abi)
        #: In the senders' loop: outcomes reported by the relay, and the senders waiting for one.
        self._reported: OrderedDict[str, BatchOutcome] = OrderedDict()
        self._awaited: dict[str, asyncio.Future[BatchOutcome]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self._dirty = False
        #: Meters with readings in a batch being sent: their later readings wait for it.
        self._busy: set[str] = set()
        self.batches = 0
        self.readings_submitted = 0
        #: Batches whose outcome came from a receipt because the relay had not reported it in time.
        self.receipts_fetched = 0

    def notify(self) -> None:
        """Tell the batcher a reading was queued (from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not wake.is_set() and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def mined(self, outcomes: dict[str, BatchOutcome]) -> None:
        """Take the relay's word that these transactions were mined (from any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._on_mined, outcomes)
            except RuntimeError:  # the senders' loop closed meanwhile: the batcher has stopped
                pass

    def _on_mined(self, outcomes: dict[str, BatchOutcome]) -> None:
        for tx, outcome in outcomes.items():
            waiter = self._awaited.pop(tx, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(outcome)
                continue
            self._reported[tx] = outcome
            if len(self._reported) > REPORTED_LIMIT:
                self._reported.popitem(last=False)

    def stop(self) -> None:
        """Finish the batch in flight, then return from ``run``."""
        self._stopping = True
        self.notify()

    def abort(self) -> None:
        """Give up the batch in flight too (its readings stay queued for the next start)."""
        self._stopping = True
        loop, main = self._loop, self._main
        if loop is not None and main is not None and not loop.is_closed():
            loop.call_soon_threadsafe(main.cancel)

    async def reconcile(self) -> None:
        """On start: forget transactions of a previous run and drop readings the chain already has."""
        reset = self.store.reset_submitted()
        before = self.store.count()
        await self._drop_recorded(self.chain, self.store, set(self.store.queued_meters()))
        log_event(log, "queue_reconciled", queued=self.store.count(), reset=reset,
                  already_on_chain=before - self.store.count())

    async def run(self) -> None:
        """Submit batches until stopped, ``pipeline`` at a time, in the senders' own thread."""
        await run_in_own_thread("batcher", self._in_thread, self.abort)

    async def _in_thread(self) -> None:
        chain, store = self._connect(), self.store.connect_again()
        try:
            await self._senders(chain, store)
        except asyncio.CancelledError:
            log_event(log, "batcher_aborted", logging.WARNING, queued=store.count())
        finally:
            await chain.close()
            store.close()

    async def _senders(self, chain: AsyncChainClient, store: Store) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        await asyncio.gather(*(self._sender(chain, store) for _ in range(self.pipeline)))

    def _take(self, store: Store) -> list[QueuedReading]:
        """The oldest pending readings of meters not in a batch being sent, marking those meters busy."""
        batch: list[QueuedReading] = []
        for reading in store.pending(self.batch_max_size * 2):
            if reading.data.meter not in self._busy:
                batch.append(reading)
                if len(batch) == self.batch_max_size:
                    break
        self._busy.update(r.data.meter for r in batch)
        return batch

    async def _sender(self, chain: AsyncChainClient, store: Store) -> None:
        wake = self._wake
        assert wake is not None
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while not self._stopping:
            wake.clear()  # before looking: a reading queued from now on sets it again (see notify)
            batch = self._take(store)
            if not batch:
                try:
                    await asyncio.wait_for(wake.wait(), timeout=self.batch_max_wait)
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                if self._dirty:
                    # A previous batch failed with its fate unknown: drop what the chain already holds
                    # before sending anything again.
                    self._dirty = False
                    await self._drop_recorded(chain, store, {r.data.meter for r in batch})
                    continue
                await self._submit(chain, store, batch)
                backoff.succeeded()
            except (ChainError, ChainUnavailable, OSError, asyncio.TimeoutError) as err:
                delay = backoff.failed()
                log_event(log, "batch_failed", logging.WARNING, size=len(batch), error=str(err)[:300],
                          retry_in=f"{delay:.1f}s")
                store.mark_submitted(batch, None)
                self._dirty = True
                await asyncio.sleep(delay)
            finally:
                self._busy.difference_update(r.data.meter for r in batch)
                wake.set()  # a sender waiting for these meters may go on

    async def _submit(self, chain: AsyncChainClient, store: Store, batch: list[QueuedReading]) -> None:
        started = time.monotonic()
        gas_limit = gas_limit_for(len(batch))
        calldata = submit_readings_calldata([(r.data, r.signature) for r in batch])
        tx_hex = (await chain.send_transaction(calldata, gas_limit)).hash
        store.mark_submitted(batch, tx_hex)
        outcome, gas_used = await self._outcome(chain, tx_hex, gas_limit)
        # A mined batch decided every reading in it: the contract emits ReadingRecorded or
        # ReadingRejected for each, so the whole batch leaves the queue (the events go to meters
        # through the relay).
        store.remove_many([(r.data.meter, r.data.seq) for r in batch])
        self.batches += 1
        self.readings_submitted += len(batch)
        latency = time.monotonic() - started
        oldest = time.time() - min(r.received_at for r in batch)
        gas = {} if gas_used is None else {"gas": gas_used, "gas_per_reading": gas_used // len(batch)}
        log_event(log, "batch_mined", size=len(batch), recorded=outcome.recorded, rejected=outcome.rejected,
                  **gas, block=outcome.block, tx=tx_hex, latency_ms=int(latency * 1000),
                  oldest_wait_ms=int(oldest * 1000), queued=store.count())

    async def _outcome(self, chain: AsyncChainClient, tx_hex: str, gas_limit: int) -> tuple[BatchOutcome, int | None]:
        """What the mined transaction decided, from the relay's report or else its receipt (with the gas used)."""
        outcome = self._reported.pop(tx_hex, None)
        if outcome is not None:
            return outcome, None
        waiter: asyncio.Future[BatchOutcome] = asyncio.get_running_loop().create_future()
        self._awaited[tx_hex] = waiter
        try:
            return await asyncio.wait_for(waiter, timeout=self.confirm_wait), None
        except asyncio.TimeoutError:
            pass
        finally:
            self._awaited.pop(tx_hex, None)
        receipt = await chain.wait_receipt(tx_hex)
        self.receipts_fetched += 1
        gas_used = int(receipt["gasUsed"], 16)
        if int(receipt["status"], 16) != 1:
            raise ChainError(f"batch transaction {tx_hex} reverted (gas used {gas_used} of {gas_limit})")
        found = self._decoder.batch_outcomes(receipt["logs"]).get(tx_hex)
        return found or BatchOutcome(int(receipt["blockNumber"], 16), 0, 0), gas_used

    async def _drop_recorded(self, chain: AsyncChainClient, store: Store, meters: set[str]) -> None:
        """Drop queued readings at or below each meter's last sequence number on chain."""
        for meter in meters:
            state = await chain.view("meterState", to_checksum_address(meter))
            dropped = store.remove_upto(meter, int(state[4]))
            if dropped:
                log_event(log, "already_on_chain", meter=meter, dropped=dropped)
