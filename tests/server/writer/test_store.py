"""The gateway's durable queue keeps both registers and the previous reading's time, and a queue
written by the previous version is set aside cleanly rather than submitted."""

from __future__ import annotations

import sqlite3
import time

from common.eip712 import ReadingData
from server.endpoint.validation import Cursor
from server.writer.store import SCHEMA_VERSION, SettledTx, Store

METER = "0x" + "ab" * 20


def test_a_queued_reading_keeps_its_export_register_and_its_previous_readings_time(tmp_path):
    store = Store(tmp_path / "queue.sqlite")
    store.put([(ReadingData(METER, 3, 2_000, 9_000, 450), "0x" + "11" * 65, 1_200)],
              {METER: Cursor(3, 2_000, 9_000, 450)})
    (queued,) = store.pending(10)
    assert queued.data == ReadingData(METER, 3, 2_000, 9_000, 450) and queued.prev_timestamp == 1_200
    assert store.cursor(METER) == Cursor(3, 2_000, 9_000, 450)
    store.close()


def test_a_queue_from_before_the_export_register_is_moved_aside_not_submitted(tmp_path):
    path = tmp_path / "queue.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE queue (meter TEXT NOT NULL, seq INTEGER NOT NULL, timestamp INTEGER NOT NULL,
            energy_wh INTEGER NOT NULL, signature TEXT NOT NULL, received_at REAL NOT NULL, tx_hash TEXT,
            PRIMARY KEY (meter, seq));
        CREATE TABLE cursor (meter TEXT PRIMARY KEY, seq INTEGER NOT NULL, timestamp INTEGER NOT NULL,
            energy_wh INTEGER NOT NULL);
        INSERT INTO queue VALUES ('0xabab', 1, 100, 5000, '0xsig', 1.0, NULL);
        INSERT INTO cursor VALUES ('0xabab', 1, 100, 5000);
    """)
    db.commit()
    db.close()
    store = Store(path)
    assert store.count() == 0 and store.pending(10) == [] and store.cursor("0xabab") is None
    assert store.db.execute("SELECT meter, seq FROM queue_v1").fetchall() == [("0xabab", 1)]
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()
    again = Store(path)  # opening again changes nothing
    assert again.db.execute("SELECT COUNT(*) FROM queue_v1").fetchone()[0] == 1
    again.close()


def test_the_batcher_cuts_a_batch_of_long_gaps_short_so_its_gas_bound_fits_a_block(tmp_path, base_settings,
                                                                                   deployment):
    from common.batches import MAX_BATCH_GAS, extra_periods, gas_limit_for
    from common.chain import AsyncChainClient
    from server.writer.batcher import Batcher

    store = Store(tmp_path / "queue.sqlite")
    meters = ["0x" + f"{i:040x}" for i in range(1, 101)]
    ten_days = 10 * 86_400
    store.put([(ReadingData(m, 1, 2_000_000_000, 9_000), "0x" + "11" * 65, 2_000_000_000 - ten_days) for m in meters],
              {})
    chain = AsyncChainClient(base_settings, deployment, base_settings.gateway_key)
    batcher = Batcher(chain, store, lambda: chain, batch_max_size=100, batch_max_wait=0.1)
    batch = batcher._take(store)
    each = extra_periods([(2_000_000_000 - ten_days, 2_000_000_000)])
    assert 1 <= len(batch) < 100
    assert gas_limit_for(len(batch), len(batch) * each) <= MAX_BATCH_GAS < gas_limit_for(len(batch) + 1,
                                                                                       (len(batch) + 1) * each)
    assert [r.data.meter for r in batch] == meters[:len(batch)]  # the oldest first, in order
    store.close()


def test_pending_leaves_out_busy_meters_so_a_batch_fills_with_the_others(tmp_path):
    store = Store(tmp_path / "queue.sqlite")
    busy, other = "0x" + "aa" * 20, "0x" + "bb" * 20
    rows = [(ReadingData(busy, seq, 1_000 + seq, 100 * seq, 0), "0x" + "11" * 65, 0) for seq in range(1, 6)]
    rows += [(ReadingData(other, seq, 1_000 + seq, 100 * seq, 0), "0x" + "22" * 65, 0) for seq in range(1, 3)]
    store.put(rows, {})
    assert [r.data.meter for r in store.pending(3)] == [busy] * 3
    assert [(r.data.meter, r.data.seq) for r in store.pending(3, {busy})] == [(other, 1), (other, 2)]
    assert len(store.pending(10, {other})) == 5
    store.close()


def test_the_count_follows_other_processes_and_the_mined_block_is_read_back(tmp_path):
    store = Store(tmp_path / "queue.sqlite")
    worker = Store(tmp_path / "queue.sqlite")  # a gateway worker's connection, in another process in real life
    worker.put([(ReadingData(METER, 1, 1_000, 100, 0), "0x" + "11" * 65, 0)], {})
    assert store.count() == 0  # the count is this process's own until told
    store.counted(1)
    assert store.count() == 1
    store.mark_mined([(METER, 1)], "0x" + "cc" * 32, 7)
    assert worker.mined_block(METER, 1) == 7 and worker.mined_block(METER, 2) is None
    store.remove_final(7)
    store.recount()
    assert store.count() == 0
    worker.recount(5)
    assert worker.count() == 5
    store.close()
    worker.close()


def test_final_readings_are_kept_with_their_transaction_and_a_deep_reorganisation_takes_them_back(tmp_path):
    store = Store(tmp_path / "queue.sqlite")
    readings = [(ReadingData(METER, seq, 1_000 + seq, 9_000 + seq, 0), "0x" + "11" * 65, 900) for seq in (1, 2, 3)]
    store.put(readings, {})
    store.mark_mined([(METER, 1), (METER, 2)], "0xaa", 10)
    store.mark_mined([(METER, 3)], "0xbb", 11)
    txs = [SettledTx("0xaa", 7, 100_000, b"\x01\x02", 10), SettledTx("0xbb", 8, 90_000, b"\x03", 11)]
    assert store.remove_final(11, txs, keep_since=0.0) == 3
    assert store.count() == 0 and store.settled_count() == 3
    # Blocks after 9 replaced; the new chain holds 0xbb again (in block 12), not 0xaa.
    reopened, orphans = store.reopen_after(9, {"0xbb": 12})
    assert orphans == []
    assert [(tx.tx_hash, tx.nonce, tx.gas, tx.data, sorted(rs)) for tx, rs in reopened] == \
        [("0xaa", 7, 100_000, b"\x01\x02", [(METER, 1), (METER, 2)])]
    # Back in the queue in flight with their transaction (not pending: it is sent again as it was).
    assert store.count() == 2 and store.pending(10) == []
    assert {(q.data.seq, q.tx_hash) for q in store.queued_of(METER)} == {(1, "0xaa"), (2, "0xaa")}
    assert store.settled_count() == 1  # the remined one stays settled, at its new block
    store.close()


def test_the_settled_journal_keeps_only_its_window_and_keeps_nothing_without_one(tmp_path):
    store = Store(tmp_path / "queue.sqlite")
    store.put([(ReadingData(METER, 1, 1_001, 9_001, 0), "0x" + "11" * 65, 900)], {})
    store.mark_mined([(METER, 1)], "0xaa", 10)
    store.remove_final(10, [SettledTx("0xaa", 1, 1, b"", 10)], keep_since=0.0)
    assert store.settled_count() == 1
    store.put([(ReadingData(METER, 2, 1_002, 9_002, 0), "0x" + "11" * 65, 1_001)], {})
    store.mark_mined([(METER, 2)], "0xbb", 11)
    store.remove_final(11, [], keep_since=time.time() + 1)  # everything settled before now is past the window
    assert store.settled_count() == 0
    store.put([(ReadingData(METER, 3, 1_003, 9_003, 0), "0x" + "11" * 65, 1_002)], {})
    store.mark_mined([(METER, 3)], "0xcc", 12)
    store.remove_final(12, [SettledTx("0xcc", 3, 1, b"", 12)], keep_since=None)
    assert store.settled_count() == 0 and store.count() == 0
    reopened, orphans = store.reopen_after(0, {})
    assert reopened == [] and orphans == []
    store.close()
