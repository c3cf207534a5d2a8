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

The senders run in a thread of their own (see ``server.writer.threads``), with their own event loop,
chain connection and database connection, so that a batch never waits behind meter traffic.
If the thread dies all the same, the server's supervisor starts it again, and the new one puts
what the old one had in hand back to pending, dropping first what the chain already took.

A failing queue database (another process holding its lock past the busy timeout, a full disk)
does not stop the senders: each failure is logged at once (``queue_storage_failed``) and counted
for ``/health``, and the step is tried again with back-off while the batch's meters stay busy,
so none of their later readings overtakes it. A batch whose transaction went out keeps waiting
for its outcome even if recording its hash failed, and leaves the queue once mined, so it is
never sent twice.

A mined batch's readings stay in the queue, marked with their block, until the relay says the
block is final (with ``CONFIRMATIONS=0`` at once, so they leave as soon as they are mined). If
the relay says the block was replaced, the batch's transaction is sent again as it was, with
its own nonce (as geth does with the transactions of replaced blocks, and Anvil does not), unless
the new chain holds it already: the gateway's later transactions, still waiting in the node's
pool with higher nonces, then go after it, so a meter's readings reach the chain in order (the
contract takes any seq above the last, so a later reading mined first would make an earlier one
stale). The chain client never gives one of the gateway's nonces twice (``common.chain``): a vanished
transaction keeps its nonce, so nothing of a meter's can overtake it, and a gap is filled at once
with the transaction that belongs there. Right after a reorganisation every transaction in flight
the node forgot is sent again too, so the next batch is mined within a few blocks.

Nothing is inferred from a higher sequence number: a reading leaves the queue only when its own
``ReadingRecorded`` (or ``ReadingRejected``) event is final. After a failure or a restart the
batcher looks each queued reading up in the meter's ``ReadingRecorded`` events: found, it counts
as mined in its block (and leaves with the next final block, as every mined reading), with its
transaction rebuilt from the chain so that it can be sent again should that block be replaced; not found, it
is submitted (and one whose meter's chain is past it already is logged at error level, by meter
and sequence number: the contract will refuse it as stale). On start, transactions of a previous
run still pending are waited for (or cancelled) before anything is sent.

Final readings are kept for ``RESUBMIT_WINDOW`` seconds with their signed transactions
(``server.writer.store``): a reorganisation deeper than ``CONFIRMATIONS`` takes them back into the queue
and sends those transactions again with their own nonces, and says at error level, by meter and
sequence number, what it resubmitted and what it could not.
Replacing a transaction that waits, sending a dropped one again and holding at the fee ceiling
happen in the chain client (``common.chain``).

A batch is known to be mined from the relay, which fetches every block's logs anyway: a
``submitReadings`` transaction with reading events was mined and decided all its readings (a
reverted one emits none). Only when the relay has not reported it within ``confirm_wait`` does
the batcher ask the node for the receipt. A node spends about as long serialising a batch's
logs as mining it, so fetching them once rather than twice is the chain's time saved.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

from eth_utils import to_checksum_address

from common.backoff import Backoff
from common.batches import MAX_BATCH_GAS, extra_periods, gas_limit_for, submit_readings_calldata
from common.chain import AsyncChainClient, Mined, SentTransaction, logs_between
from common.errors import ChainError, ChainUnavailable, FeesTooHigh
from common.events import BatchOutcome, EventDecoder
from common.fees import Fees
from common.logs import log_event
from common.tariff import USES_UP_SEQ, RejectReason
from server import metrics
from server.writer.store import QueuedReading, SettledTx, Store
from server.writer.threads import run_in_own_thread

__all__ = ["Batcher"]

log = logging.getLogger("batcher")

#: Outcomes the relay reported before the batcher asked for them (kept for the most recent only).
REPORTED_LIMIT = 1_000
#: Waits after a failed batch: from this, doubling, up to the cap (seconds).
RETRY_FIRST, RETRY_CAP = 0.5, 10.0
#: Seconds a meter's readings wait after the chain refused one for a missing predecessor (``SequenceGap``).
OUT_OF_ORDER_HOLD = 10.0
#: Meters whose recorded readings one ``eth_getLogs`` asks for (topics hold a list of them; one binary search on
#: block timestamps finds where all of them start).
LOOKUP_METERS = 100
#: Seconds before a reading's timestamp that its block may be (the contract's future skew, with room).
LOOKUP_SLACK = 3_600
#: How many meters and sequence numbers a log line lists at most.
LISTED = 40
#: What the operator should do when the queue database fails (logged with each failure).
STORAGE_ACTION = ("the readings stay queued and are tried again; if this goes on, check that no other process holds "
                  "the queue database (an sqlite3 shell, a backup) and that the disk is not full")


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
        self.confirmations = chain.settings.finality_depth
        self.resubmit_window = chain.settings.resubmit_window
        #: In the senders' loop: outcomes reported by the relay (with the rollback generation they were reported
        #: in), and the senders waiting for one.
        self._reported: OrderedDict[str, tuple[BatchOutcome, int]] = OrderedDict()
        self._awaited: dict[str, asyncio.Future[tuple[str, tuple[BatchOutcome, int]]]] = {}
        #: In the senders' loop: the newest final block, rollbacks so far and their forks, the thread's
        #: connections; and the relay's word that came before the loop ran (applied when it starts).
        self._final = -1
        self._generation = 0
        self._forks: list[tuple[int, int]] = []
        self._thread_store: Store | None = None
        self._thread_chain: AsyncChainClient | None = None
        self._early: list[tuple[str, tuple[object, ...]]] = []
        self._early_lock = threading.Lock()
        #: In the senders' loop: transactions mined in blocks not final yet, with their block and readings, to be
        #: sent again as they were if their block is replaced; and the hash each was mined under.
        self._unfinal_txs: list[tuple[SentTransaction, int, list[tuple[str, int]]]] = []
        self._mined_as: dict[int, str] = {}
        #: Readings submitted again after a reorganisation deeper than finality, and those that could not be.
        self.deep_resubmitted = 0
        self.deep_not_resubmitted = 0
        #: Transactions ``reconcile`` found mined in blocks not final yet (taken into the senders' loop at its start).
        self._early_unfinal: list[tuple[SentTransaction, int, list[tuple[str, int]]]] = []
        self._resending: set[asyncio.Task[None]] = set()
        self.rollbacks = 0
        self.resent_after_reorg = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self._dirty = False
        #: Meters whose queued readings another writer may have sent already (a partition taken over on the bus):
        #: each is settled against its own events before any of its readings is sent.
        self._unchecked: set[str] = set()
        self._unchecked_lock = threading.Lock()
        #: Meters with readings in a batch being sent: their later readings wait for it.
        self._busy: set[str] = set()
        #: Meters whose readings wait (until a monotonic time) after one was refused as out of order.
        self._held: dict[str, float] = {}
        self.batches = 0
        self.readings_submitted = 0
        #: Batches whose outcome came from a receipt because the relay had not reported it in time.
        self.receipts_fetched = 0
        #: For ``/health``: when a batch was last mined and taken off the queue, and the failed attempts since.
        self.last_batch_at: float | None = None
        self.failures_in_a_row = 0
        self.failing_since: float | None = None
        self.last_error: str | None = None
        self._runs = 0

    @property
    def sender_chain(self) -> AsyncChainClient | None:
        """The senders' chain client while they run (``/metrics`` reads its replaced and resent transactions)."""
        return self._thread_chain

    def check_first(self, meters: set[str]) -> None:
        """Settle these meters' queued readings against their own events before sending any (another writer, whose
        partition this one took over, may have sent them)."""
        with self._unchecked_lock:
            self._unchecked.update(m.lower() for m in meters)
        self.notify()

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

    def finalized(self, final: int) -> None:
        """Take the relay's word that blocks up to ``final`` are final (from any thread)."""
        self._hand_over("final", (final,))

    def rolled_back(self, fork: int, remined: dict[str, BatchOutcome]) -> None:
        """Take the relay's word that blocks after ``fork`` were replaced; ``remined``: the transactions the new
        chain shows mined (from any thread)."""
        self._hand_over("rollback", (fork, remined))

    def _hand_over(self, kind: str, args: tuple[object, ...]) -> None:
        with self._early_lock:
            loop = self._loop
            if loop is None or loop.is_closed():
                self._early.append((kind, args))  # the senders' loop is not running (yet): applied when it starts
                return
        try:
            loop.call_soon_threadsafe(self._apply_word, kind, args)
        except RuntimeError:
            with self._early_lock:
                self._early.append((kind, args))

    def _apply_word(self, kind: str, args: tuple[object, ...]) -> None:
        if kind == "final":
            self._on_final(int(args[0]))  # type: ignore[call-overload]
        else:
            self._on_rollback(int(args[0]), args[1])  # type: ignore[call-overload, arg-type]

    def _on_mined(self, outcomes: dict[str, BatchOutcome]) -> None:
        for tx, outcome in outcomes.items():
            waiter = self._awaited.pop(tx, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result((tx, (outcome, self._generation)))
                continue
            self._reported[tx] = (outcome, self._generation)
            if len(self._reported) > REPORTED_LIMIT:
                self._reported.popitem(last=False)

    def _on_final(self, final: int) -> None:
        """Blocks up to ``final`` are final: their readings leave the queue (kept a while in the settled journal,
        with their transactions), and their transactions leave the chain client's registry."""
        self._final = max(self._final, final)
        done = [entry for entry in self._unfinal_txs if entry[1] <= self._final]
        self._unfinal_txs = [entry for entry in self._unfinal_txs if entry[1] > self._final]
        store, chain = self._thread_store, self._thread_chain
        for tx, _, _ in done:
            if chain is not None:
                chain.settled(tx)
        if self.confirmations == 0 or store is None:
            return  # every mined reading left at once
        txs = [SettledTx(self._mined_as.pop(tx.nonce, tx.hash), tx.nonce, tx.gas, tx.data, block)
               for tx, block, _ in done]
        keep_since = time.time() - self.resubmit_window if self.resubmit_window > 0 else None
        try:
            store.remove_final(final, txs, keep_since)
        except sqlite3.Error as err:  # tried again with the next final block
            self._storage_failed("remove_final", err, 0, None)

    def _on_rollback(self, fork: int, remined: dict[str, BatchOutcome]) -> None:
        """Blocks after ``fork`` were replaced: their transactions are sent again as they were, with their nonces
        (their readings wait for them, as mined batches do); readings of transactions not known go back to pending.
        Deeper than finality, the settled journal gives back what the replaced final blocks held."""
        deep = fork < self._final
        self._generation += 1
        self._forks = [*self._forks[-99:], (self._generation, fork)]
        self._final = min(self._final, fork)
        self.rollbacks += 1
        for tx_hash in [h for h, (outcome, _) in self._reported.items() if outcome.block > fork]:
            del self._reported[tx_hash]
        vanished = [entry for entry in self._unfinal_txs
                    if entry[1] > fork and not any(h in remined for h in entry[0].hashes)]
        kept: list[tuple[SentTransaction, int, list[tuple[str, int]]]] = []
        for tx, block, readings in self._unfinal_txs:
            again = next((remined[h].block for h in tx.hashes if h in remined), None)
            if again is not None and block > fork:
                kept.append((tx, again, readings))  # the new chain holds it too, in another block
            elif block <= fork:
                kept.append((tx, block, readings))
        self._unfinal_txs = kept
        chain, store = self._thread_chain, self._thread_store
        back = 0
        if store is not None:
            try:
                if deep:
                    vanished += self._reopen(store, fork, remined)
                back = store.unmine_after(fork, {tx: o.block for tx, o in remined.items()},
                                          keep={tx.hash: readings for tx, _, readings in vanished})
            except sqlite3.Error as err:
                self._storage_failed("unmine", err, 0, None)
                self._dirty = True  # the next batch first settles the queue against the chain
        vanished.sort(key=lambda entry: entry[0].nonce)
        if back and chain is not None:
            chain.forget_nonce()  # the chain says which nonce is next (never below one of ours in flight)
        if chain is not None and store is not None:
            for tx, _, _ in vanished:
                chain.register(tx)  # at once: a gap at its nonce is filled with it, never with another
            task = asyncio.get_running_loop().create_task(self._resubmit(chain, store, vanished))
            self._resending.add(task)
            task.add_done_callback(self._resending.discard)
        log_event(log, "batches_rolled_back", logging.ERROR if deep else logging.WARNING, fork=fork,
                  sent_again=len(vanished), readings_back_to_pending=back, remined=len(remined), deep=deep)
        if self._wake is not None:
            self._wake.set()

    def _reopen(self, store: Store, fork: int, remined: dict[str, BatchOutcome]
                ) -> list[tuple[SentTransaction, int, list[tuple[str, int]]]]:
        """Deeper than finality: the settled readings of replaced blocks back into the queue, with their transactions
        to send again; logged at error level by meter and sequence number, with any that cannot be."""
        reopened, orphans = store.reopen_after(fork, {tx: o.block for tx, o in remined.items()})
        now = time.monotonic()
        vanished = [(SentTransaction(stx.nonce, stx.data, stx.gas, Fees(0, 0), [stx.tx_hash], now, now), stx.block,
                     readings) for stx, readings in reopened]
        readings = [r for _, _, rs in vanished for r in rs]
        self.deep_resubmitted += len(readings)
        self.deep_not_resubmitted += len(orphans)
        if readings:
            log_event(log, "final_readings_resubmitted", logging.ERROR, fork=fork, readings=len(readings),
                      transactions=len(vanished), which=_listed(readings),
                      reason="a reorganisation deeper than CONFIRMATIONS replaced final blocks; their transactions "
                             "are sent again with their own nonces",
                      action="raise CONFIRMATIONS for this chain")
        if orphans:
            log_event(log, "final_readings_not_resubmitted", logging.ERROR, fork=fork, readings=len(orphans),
                      which=_listed(orphans),
                      reason="their transaction was not kept (older than RESUBMIT_WINDOW, or from before a restart)",
                      action="they go back to pending and are submitted anew; a meter whose later readings the new "
                             "chain holds will see them refused as stale")
        return vanished

    async def _resubmit(self, chain: AsyncChainClient, store: Store,
                        vanished: list[tuple[SentTransaction, int, list[tuple[str, int]]]]) -> None:
        """Send the vanished transactions again in nonce order, then whatever else in flight the node forgot, then
        see each mined anew."""
        waits = []
        for tx, _, readings in vanished:
            try:
                self.resent_after_reorg += 1
                await chain.send_again(tx)
            except (ChainError, OSError, asyncio.TimeoutError) as err:
                log_event(log, "batch_not_sent_again", logging.WARNING, size=len(readings), error=str(err)[:300],
                          action="it stays registered with its nonce and is sent again when the chain waits for it")
            waits.append(self._mined_again(chain, store, tx, readings))
        try:
            resent = await chain.rebroadcast()
            if resent:
                log_event(log, "in_flight_sent_again", transactions=resent,
                          reason="the node forgot them with the replaced blocks")
        except (ChainError, OSError, asyncio.TimeoutError) as err:
            log_event(log, "in_flight_not_sent_again", logging.WARNING, error=str(err)[:300],
                      action="each is sent again when its wait looks at it")
        await asyncio.gather(*waits)

    async def _mined_again(self, chain: AsyncChainClient, store: Store, tx: SentTransaction,
                           readings: list[tuple[str, int]]) -> None:
        """See a transaction of a replaced block mined anew."""
        try:
            found = await chain.until_mined(tx, self._reported_any, self.confirm_wait, keep=self.confirmations > 0)
            outcome, generation, _ = self._outcome(found, tx.gas)
            if self._replaced_since(generation, outcome.block):
                return  # replaced again: the rollback that said so sent it again already
            self._record_mined(store, tx, found.tx_hash, outcome.block, readings, outcome.out_of_order)
            log_event(log, "batch_mined_again", size=len(readings), block=outcome.block, tx=found.tx_hash)
        except (ChainError, OSError, asyncio.TimeoutError, sqlite3.Error) as err:
            log_event(log, "batch_not_sent_again", logging.ERROR, size=len(readings), error=str(err)[:300],
                      which=_listed(readings),
                      action="its readings go back to pending and are submitted anew")
            try:
                store.put_back(readings)
            except sqlite3.Error as storage_err:
                self._storage_failed("put_back", storage_err, len(readings), None)
            self._dirty = True
            if self._wake is not None:
                self._wake.set()

    def _record_mined(self, store: Store, tx: SentTransaction, tx_hash: str, block: int,
                      readings: list[tuple[str, int]], out_of_order: tuple[tuple[str, int], ...] = ()) -> bool:
        """Record a batch mined in ``block``: gone from the queue if final, else kept with its block (and its
        transaction, to be sent again if the block is replaced). Readings the chain refused only because an
        earlier one of their meter is missing go back to pending, their meters held a while. Returns whether it
        was final."""
        if out_of_order:
            retry = {(meter.lower(), seq) for meter, seq in out_of_order}
            back = [r for r in readings if (r[0].lower(), r[1]) in retry]
            readings = [r for r in readings if (r[0].lower(), r[1]) not in retry]
            store.put_back(back)
            until = time.monotonic() + OUT_OF_ORDER_HOLD
            self._held.update({meter.lower(): until for meter, _ in back})
            log_event(log, "readings_out_of_order", logging.WARNING, readings=len(back), which=_listed(back),
                      reason="the chain holds no earlier reading of their meters (SequenceGap)",
                      action=f"submitted again after {OUT_OF_ORDER_HOLD:.0f} s, once the earlier ones are in")
        if self.confirmations == 0:
            store.remove_many(readings)
            if self._thread_chain is not None:
                self._thread_chain.settled(tx)
            return True
        if block <= self._final:  # final already: kept in the settled journal like every final reading
            store.mark_mined(readings, tx_hash, block)
            keep_since = time.time() - self.resubmit_window if self.resubmit_window > 0 else None
            store.remove_final(self._final, [SettledTx(tx_hash, tx.nonce, tx.gas, tx.data, block)], keep_since)
            if self._thread_chain is not None:
                self._thread_chain.settled(tx)
            return True
        store.mark_mined(readings, tx_hash, block)
        self._unfinal_txs.append((tx, block, readings))
        self._mined_as[tx.nonce] = tx_hash
        return False

    def _replaced_since(self, generation: int, block: int) -> bool:
        """Whether a rollback since ``generation`` replaced ``block``."""
        return any(g > generation and fork < block for g, fork in self._forks)

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
        """On start: wait for (or cancel) the transactions a previous run left pending, forget them, and settle the
        queue against the chain reading by reading."""
        await self.chain.clear_pending(self.chain.settings.tx_replace_after)
        reset = self.store.reset_submitted()
        before = self.store.count()
        self._early_unfinal = await self._drop_recorded(self.chain, self.store, set(self.store.queued_meters()))
        log_event(log, "queue_reconciled", queued=self.store.count(), reset=reset,
                  already_on_chain=before - self.store.count() + self.store.mined_count())

    async def run(self) -> None:
        """Submit batches until stopped, ``pipeline`` at a time, in the senders' own thread."""
        await run_in_own_thread("batcher", self._in_thread, self.abort)

    async def _in_thread(self) -> None:
        chain, store = self._connect(), self.store.connect_again()
        self._runs += 1
        try:
            if self._runs > 1:
                self._recover(store)
            await self._senders(chain, store)
        except asyncio.CancelledError:
            log_event(log, "batcher_aborted", logging.WARNING, queued=store.count())
        finally:
            await chain.close()
            store.close()

    def _recover(self, store: Store) -> None:
        """After the senders' thread died: what it had in hand is pending again, and what the chain took goes first."""
        self._busy.clear()
        self._awaited.clear()
        reset = store.reset_submitted()
        self._dirty = True
        log_event(log, "batcher_recovered", reset=reset, queued=store.count())

    async def _senders(self, chain: AsyncChainClient, store: Store) -> None:
        self._wake = asyncio.Event()
        self._thread_store, self._thread_chain = store, chain
        self._main = asyncio.current_task()
        with self._early_lock:
            self._loop = asyncio.get_running_loop()
            early, self._early = self._early, []
        for tx, block, readings in self._early_unfinal:
            self._unfinal_txs.append((tx, block, readings))
            chain.register(tx)
        self._early_unfinal = []
        for kind, args in early:
            self._apply_word(kind, args)
        try:
            await asyncio.gather(*(self._sender(chain, store) for _ in range(self.pipeline)))
        finally:
            with self._early_lock:
                self._loop = None
            self._thread_store = self._thread_chain = None

    def _take(self, store: Store) -> list[QueuedReading]:
        """The oldest pending readings of meters not in a batch being sent, marking those meters busy."""
        batch: list[QueuedReading] = []
        extra = 0
        skip = self._busy
        if self._held:
            now = time.monotonic()
            self._held = {meter: until for meter, until in self._held.items() if until > now}
            skip = self._busy | set(self._held)
        # The busy meters' readings are left out in the query: otherwise, with several batches in flight, the
        # oldest pending readings are mostly theirs, and a sender would find too few others to fill a batch.
        for reading in store.pending(self.batch_max_size * 2, skip):
            if reading.data.meter not in skip:
                # Readings after a gap price every half hour they span: keep the batch's gas bound within a block.
                spans = extra_periods([(reading.prev_timestamp, reading.data.timestamp)])
                if batch and gas_limit_for(len(batch) + 1, extra + spans) > MAX_BATCH_GAS:
                    break
                batch.append(reading)
                extra += spans
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
            try:
                batch = self._take(store)
            except sqlite3.Error as err:
                delay = backoff.failed()
                self._storage_failed("read_queue", err, 0, delay)
                await asyncio.sleep(delay)
                continue
            if not batch:
                if self.failures_in_a_row and not self._busy:
                    self.failures_in_a_row, self.failing_since = 0, None  # nothing is queued, so nothing is failing
                try:
                    await asyncio.wait_for(wake.wait(), timeout=self.batch_max_wait)
                except asyncio.TimeoutError:
                    pass
                continue
            try:
                meters = {r.data.meter for r in batch}
                with self._unchecked_lock:
                    unchecked = meters & self._unchecked
                    self._unchecked -= unchecked
                if self._dirty or unchecked:
                    # A previous batch failed with its fate unknown, or another writer had these meters: drop what
                    # the chain already holds before sending anything again.
                    dirty, self._dirty = self._dirty, False
                    try:
                        for tx, block, readings in await self._drop_recorded(chain, store,
                                                                              meters if dirty else unchecked):
                            if not any(entry[0].nonce == tx.nonce for entry in self._unfinal_txs):
                                self._unfinal_txs.append((tx, block, readings))
                                chain.register(tx)
                    except BaseException:
                        self._dirty = self._dirty or dirty  # not done: the next batch does it
                        with self._unchecked_lock:
                            self._unchecked |= unchecked
                        raise
                    continue
                await self._submit(chain, store, batch)
                backoff.succeeded()
            except FeesTooHigh as err:  # nothing was sent: the readings wait, pending
                delay = backoff.failed()
                self._failed(err)
                log_event(log, "batch_held", logging.WARNING, size=len(batch), reason=err.message,
                          retry_in=f"{delay:.1f}s")
                try:
                    store.mark_submitted(batch, None)
                except sqlite3.Error as storage_err:
                    await self._write_again("put_back", partial(store.mark_submitted, batch, None), len(batch),
                                            storage_err)
                await asyncio.sleep(delay)
            except (ChainError, ChainUnavailable, OSError, asyncio.TimeoutError) as err:
                delay = backoff.failed()
                self._failed(err)
                log_event(log, "batch_failed", logging.WARNING, size=len(batch), error=str(err)[:300],
                          retry_in=f"{delay:.1f}s")
                self._dirty = True
                try:
                    store.mark_submitted(batch, None)
                except sqlite3.Error as storage_err:
                    # Its meters stay busy until the readings are pending again: none of their later ones overtakes.
                    await self._write_again("put_back", partial(store.mark_submitted, batch, None), len(batch),
                                            storage_err)
                await asyncio.sleep(delay)
            except sqlite3.Error as err:  # dropping what the chain holds: nothing of the batch was sent
                delay = backoff.failed()
                self._storage_failed("drop_recorded", err, len(batch), delay)
                await asyncio.sleep(delay)
            finally:
                self._busy.difference_update(r.data.meter for r in batch)
                wake.set()  # a sender waiting for these meters may go on

    async def _submit(self, chain: AsyncChainClient, store: Store, batch: list[QueuedReading]) -> None:
        started = time.monotonic()
        gas_limit = gas_limit_for(len(batch), extra_periods((r.prev_timestamp, r.data.timestamp) for r in batch))
        calldata = submit_readings_calldata([(r.data, r.signature) for r in batch])
        tx = await chain.send_transaction(calldata, gas_limit)
        tx_hex = tx.hash
        try:
            store.mark_submitted(batch, tx_hex)
        except sqlite3.Error as err:
            # The transaction is out and its outcome is awaited below all the same. Its meters stay busy
            # meanwhile, so no other batch carries these readings; were the thread to die, its restart
            # drops what the chain took before sending again, and the chain's sequence check refuses a
            # second copy of one in flight.
            self._storage_failed("mark_submitted", err, len(batch), None)
        found = await chain.until_mined(tx, self._reported_any, self.confirm_wait, keep=self.confirmations > 0)
        outcome, generation, gas_used = self._outcome(found, gas_limit)
        if self._replaced_since(generation, outcome.block):
            raise ChainError(f"batch transaction {found.tx_hash}'s block {outcome.block} was replaced by a "
                             "reorganisation; its readings are submitted again")
        # A mined batch decided every reading in it: the contract emits ReadingRecorded or ReadingRejected for
        # each (the events go to meters through the relay). The batch leaves the queue once its block is final.
        mined = [(r.data.meter, r.data.seq) for r in batch]
        final_now = self.confirmations == 0 or outcome.block <= self._final
        write = partial(self._record_mined, store, tx, found.tx_hash, outcome.block, mined, outcome.out_of_order)
        try:
            write()
        except sqlite3.Error as err:
            # Its meters stay busy until the readings are recorded as mined, so none is sent again. If the batcher
            # stops first, they stay queued and the next start drops them once final on chain.
            if not await self._write_again("remove_mined", write, len(batch), err):
                return
        now = time.time()
        self.last_batch_at = now
        self.failures_in_a_row, self.failing_since = 0, None
        self.batches += 1
        self.readings_submitted += len(batch)
        latency = time.monotonic() - started
        oldest = now - min(r.received_at for r in batch)
        gas = {} if gas_used is None else {"gas": gas_used, "gas_per_reading": gas_used // len(batch)}
        metrics.batch_mined(len(batch), latency, oldest, gas_used)
        log_event(log, "batch_mined", size=len(batch), recorded=outcome.recorded, rejected=outcome.rejected,
                  **gas, block=outcome.block, final=final_now, tx=found.tx_hash, latency_ms=int(latency * 1000),
                  oldest_wait_ms=int(oldest * 1000), queued=store.count())

    def _failed(self, err: BaseException) -> None:
        """Count a failed attempt for ``/health``."""
        if self.failing_since is None:
            self.failing_since = time.time()
        self.failures_in_a_row += 1
        self.last_error = f"{type(err).__name__}: {err}"[:300]

    def _storage_failed(self, step: str, err: sqlite3.Error, size: int, retry_in: float | None) -> None:
        """Count and log, at once, a failed read or write of the queue database."""
        self._failed(err)
        log_event(log, "queue_storage_failed", logging.ERROR, step=step, size=size, error=self.last_error,
                  retry_in=None if retry_in is None else f"{retry_in:.1f}s", queue=str(self.store.path),
                  action=STORAGE_ACTION)

    async def _write_again(self, step: str, write: Callable[[], object], size: int, err: sqlite3.Error) -> bool:
        """After a write to the queue failed with ``err``, retry it with back-off until it is done (True), or until
        the batcher is stopping (False)."""
        backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        while True:
            if self._stopping:
                self._storage_failed(step, err, size, None)
                return False
            delay = backoff.failed()
            self._storage_failed(step, err, size, delay)
            await asyncio.sleep(delay)
            try:
                write()
                return True
            except sqlite3.Error as again:
                err = again

    async def _reported_any(self, hashes: list[str], timeout: float) -> tuple[str, tuple[BatchOutcome, int]] | None:
        """The relay's report of whichever of ``hashes`` was mined, waiting up to ``timeout`` seconds for it."""
        for tx_hash in hashes:
            reported = self._reported.pop(tx_hash, None)
            if reported is not None:
                return tx_hash, reported
        waiter: asyncio.Future[tuple[str, tuple[BatchOutcome, int]]] = asyncio.get_running_loop().create_future()
        for tx_hash in hashes:
            self._awaited[tx_hash] = waiter
        try:
            return await asyncio.wait_for(waiter, timeout=timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            for tx_hash in hashes:
                if self._awaited.get(tx_hash) is waiter:
                    del self._awaited[tx_hash]

    def _outcome(self, found: Mined[tuple[BatchOutcome, int]], gas_limit: int) -> tuple[BatchOutcome, int, int | None]:
        """What the mined transaction decided, from the relay's report or else its receipt: (outcome, the rollback
        generation it was learnt in, the gas used when the receipt says)."""
        if found.report is not None:
            return found.report[0], found.report[1], None
        receipt = found.receipt
        assert receipt is not None
        self.receipts_fetched += 1
        gas_used = int(receipt["gasUsed"], 16)
        if int(receipt["status"], 16) != 1:
            raise ChainError(f"batch transaction {found.tx_hash} reverted (gas used {gas_used} of {gas_limit})")
        outcome = self._decoder.batch_outcomes(receipt["logs"]).get(found.tx_hash)
        return outcome or BatchOutcome(int(receipt["blockNumber"], 16), 0, 0), self._generation, gas_used

    async def _drop_recorded(self, chain: AsyncChainClient, store: Store, meters: set[str]
                             ) -> list[tuple[SentTransaction, int, list[tuple[str, int]]]]:
        """Settle the queued readings of ``meters`` against their own ``ReadingRecorded`` events: found, they count
        as mined in their block (and leave with the next final block, into the settled journal), and their
        transactions are returned (rebuilt from the chain) to be sent again should that block be replaced; readings
        of a meter whose chain is past them without their own event are logged as overtaken."""
        head = int(await chain.request("eth_blockNumber", []), 16)
        final = head - self.confirmations
        candidates: dict[str, list[QueuedReading]] = {}
        for meter in sorted(meters):
            last = int((await chain.view("meterState", to_checksum_address(meter)))[4])
            queued = [r for r in store.queued_of(meter) if r.data.seq <= last]
            if queued:
                candidates[meter.lower()] = queued
        if not candidates:
            return []
        since = min(r.data.timestamp for rs in candidates.values() for r in rs) - LOOKUP_SLACK
        start = await self._first_block_at(chain, since, head)
        found: dict[tuple[str, int], tuple[int, str]] = {}
        names = list(candidates)
        for first in range(0, len(names), LOOKUP_METERS):
            # A reading's own event: recorded, or refused for its content (which uses its seq up, see USES_UP_SEQ).
            topics = [[self._decoder.topic("ReadingRecorded"), self._decoder.topic("ReadingRejected")],
                      ["0x" + "0" * 24 + meter.removeprefix("0x") for meter in names[first:first + LOOKUP_METERS]]]
            async for logs in logs_between(chain.request, chain.deployment.address, start, head, topics):
                for raw in logs:
                    event = self._decoder.decode(raw)
                    if event is None or (event.name == "ReadingRejected"
                                         and RejectReason(int(event.args["reason"])) not in USES_UP_SEQ):
                        continue
                    found[(str(event.args["meter"]).lower(), int(event.args["seq"]))] = (event.block, event.tx_hash)
        done: list[tuple[str, int]] = []
        mined: list[tuple[str, int, int, str]] = []
        overtaken: list[tuple[str, int]] = []
        for meter, queued in candidates.items():
            for reading in queued:
                key = (meter, reading.data.seq)
                if key not in found:
                    overtaken.append(key)
                elif not self.confirmations:
                    done.append(key)
                else:
                    mined.append((*key, *found[key]))
        if done:
            store.remove_many(done)
            log_event(log, "already_on_chain", readings=len(done), which=_listed(done))
        unfinal: dict[str, tuple[SentTransaction, int, list[tuple[str, int]]]] = {}
        if mined:
            # Final or not, they count as mined in their block: the relay's next word of a final block moves
            # them to the settled journal with their transactions, as every final reading.
            store.mark_recorded(mined)
            for meter, seq, block, tx_hash in mined:
                entry = unfinal.get(tx_hash)
                if entry is None:
                    tx = await chain.rebuild(tx_hash)
                    if tx is None:
                        continue
                    entry = unfinal[tx_hash] = (tx, block, [])
                entry[2].append((meter, seq))
            log_event(log, "already_on_chain", readings=len(mined), which=_listed([m[:2] for m in mined]),
                      final=sum(1 for m in mined if m[2] <= final), transactions=len({m[3] for m in mined}))
        if overtaken:
            log_event(log, "readings_overtaken", logging.ERROR, readings=len(overtaken), which=_listed(overtaken),
                      reason="the chain holds later readings of these meters but not these: the contract will "
                             "refuse them as stale (StaleSequence), and their meters are told",
                      action="report this: readings are submitted in order, so it should never happen")
        return list(unfinal.values())

    async def _first_block_at(self, chain: AsyncChainClient, timestamp: int, head: int) -> int:
        """The first block (from the contract's) whose timestamp is at least ``timestamp``: a binary search."""
        low, high = chain.deployment.block, head
        while low < high:
            middle = (low + high) // 2
            block = await chain.request("eth_getBlockByNumber", [hex(middle), False])
            if block is None or int(block["timestamp"], 16) >= timestamp:
                high = middle
            else:
                low = middle + 1
        return low


def _listed(readings: list[tuple[str, int]]) -> str:
    """Readings as ``meter:seq,seq ...`` for a log line, the first ``LISTED`` of them."""
    by_meter: dict[str, list[int]] = {}
    for meter, seq in readings[:LISTED]:
        by_meter.setdefault(meter, []).append(seq)
    text = " ".join(f"{m}:{','.join(str(s) for s in sorted(seqs))}" for m, seqs in by_meter.items())
    return text + (f" (+{len(readings) - LISTED} more)" if len(readings) > LISTED else "")
