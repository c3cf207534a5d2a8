"""The gateway's durable state in SQLite (WAL mode): queued readings, per-meter cursors, and
the relay's position in the chain's log with the hashes of the recent blocks it read.

A reading is committed here before its meter gets ``ack``; it leaves when the block of the
transaction that carried it is final (the contract then emitted ``ReadingRecorded`` or
``ReadingRejected`` for it), or, after a failure, when it is found at or below its meter's last
sequence number in the chain's final state. Until then a mined reading is kept with its block
(``mined_block``), and goes back to pending if that block is replaced. With ``CONFIRMATIONS=0``
every mined block is final, and a reading leaves as soon as it is mined.

A reading that leaves as final is kept a while longer (``RESUBMIT_WINDOW`` seconds, a day by
default) in the ``settled`` table, with the signed transaction that carried it in ``sent_txs``:
should a reorganisation deeper than ``CONFIRMATIONS`` replace its block, the batcher takes it
back into the queue and sends that transaction again with its own nonce. WAL with
``synchronous=NORMAL`` survives a killed process (SIGKILL) without losing a committed row;
set ``synchronous=FULL`` (``durable_fsync=True``) to survive power loss too, at a cost per
commit.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.eip712 import ReadingData
from common.errors import StorageError
from common.logs import log_event
from server.endpoint.validation import Cursor

__all__ = ["QueuedReading", "SettledTx", "Store", "BUSY_TIMEOUT_MS", "SCHEMA_VERSION", "queue_unusable"]

log = logging.getLogger("store")

#: The most meters ``pending`` leaves out in SQL (one parameter each; SQLite allows 32,766); above it the
#: caller filters alone.
MAX_SKIPPED = 10_000
#: How long a connection waits for another connection's write to finish before giving up.
BUSY_TIMEOUT_MS = 10_000

#: The queue's layout version (``PRAGMA user_version``): 2 added the export register and the
#: previous reading's time (for the batch's gas bound).
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    meter TEXT NOT NULL,
    seq INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL,
    export_wh INTEGER NOT NULL,
    prev_timestamp INTEGER NOT NULL,
    signature TEXT NOT NULL,
    received_at REAL NOT NULL,
    tx_hash TEXT,
    PRIMARY KEY (meter, seq)
);
CREATE TABLE IF NOT EXISTS cursor (
    meter TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL,
    export_wh INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS relay_blocks (
    name TEXT NOT NULL,
    number INTEGER NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (name, number)
);
CREATE TABLE IF NOT EXISTS settled (
    meter TEXT NOT NULL,
    seq INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL,
    export_wh INTEGER NOT NULL,
    prev_timestamp INTEGER NOT NULL,
    signature TEXT NOT NULL,
    received_at REAL NOT NULL,
    tx_hash TEXT,
    mined_block INTEGER NOT NULL,
    settled_at REAL NOT NULL,
    PRIMARY KEY (meter, seq)
);
CREATE INDEX IF NOT EXISTS settled_by_block ON settled (mined_block);
CREATE TABLE IF NOT EXISTS sent_txs (
    tx_hash TEXT PRIMARY KEY,
    nonce INTEGER NOT NULL,
    gas INTEGER NOT NULL,
    data BLOB NOT NULL,
    block INTEGER NOT NULL,
    settled_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_txs_by_block ON sent_txs (block);
CREATE TABLE IF NOT EXISTS position (
    name TEXT PRIMARY KEY,
    block INTEGER NOT NULL,
    log_index INTEGER NOT NULL
);
"""

_UPSERT_CURSOR = (
    "INSERT INTO cursor (meter, seq, timestamp, energy_wh, export_wh) VALUES (?,?,?,?,?) "
    "ON CONFLICT(meter) DO UPDATE SET seq=excluded.seq, timestamp=excluded.timestamp, energy_wh=excluded.energy_wh, "
    "export_wh=excluded.export_wh"
)
_COLUMNS = "meter, seq, timestamp, energy_wh, export_wh, prev_timestamp, signature, received_at, tx_hash"


@dataclass(frozen=True)
class QueuedReading:
    """A reading waiting for the chain."""

    data: ReadingData
    signature: str
    received_at: float
    tx_hash: str | None
    #: The meter's previous reading's time: the batch's gas bound grows with the periods a reading spans.
    prev_timestamp: int = 0


@dataclass(frozen=True)
class SettledTx:
    """A batch transaction whose block turned final, kept to be sent again should that block be replaced."""

    tx_hash: str
    nonce: int
    gas: int
    data: bytes
    block: int


class _Count:
    """How many readings are queued, shared by the connections of one process (thread-safe)."""

    def __init__(self, value: int) -> None:
        self.value = value
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n

    def set(self, value: int) -> None:
        with self._lock:
            self.value = value


class Store:
    """The gateway's SQLite database: one connection per thread that uses it (``connect_again``)."""

    def __init__(self, path: Path, durable_fsync: bool = False, count: _Count | None = None,
                 busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        """Open (or create) the queue; raises ``StorageError`` saying what to do if the file cannot be used."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.durable_fsync = durable_fsync
        self.busy_timeout_ms = busy_timeout_ms
        try:
            self.db = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                                      check_same_thread=False)
        except sqlite3.DatabaseError as err:
            raise queue_unusable(path, err) from err
        try:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable_fsync else 'NORMAL'}")
            _migrate(self.db, path)
            self.db.executescript(_SCHEMA)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(queue)")}
            if "mined_block" not in columns:  # a queue from before finality was tracked
                self.db.execute("ALTER TABLE queue ADD COLUMN mined_block INTEGER")
            self.db.execute("CREATE INDEX IF NOT EXISTS queue_by_block ON queue (mined_block) "
                            "WHERE mined_block IS NOT NULL")
            self._count = count or _Count(int(self.db.execute("SELECT COUNT(*) FROM queue").fetchone()[0]))
        except sqlite3.DatabaseError as err:
            self.db.close()
            raise queue_unusable(path, err) from err

    def connect_again(self) -> Store:
        """Another connection to the same database, for another thread, sharing the queue's count."""
        return Store(self.path, self.durable_fsync, self._count, self.busy_timeout_ms)

    def close(self) -> None:
        """Checkpoint and close the database."""
        self.db.close()

    # ---------------------------------------------------------------- queue

    def put(self, readings: list[tuple[ReadingData, str, int]], cursors: dict[str, Cursor]) -> None:
        """Queue accepted readings (with their signatures and their meter's previous reading's time)
        and move meters' cursors, all in one transaction."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO queue (meter, seq, timestamp, energy_wh, export_wh, prev_timestamp, signature, "
                "received_at) VALUES (?,?,?,?,?,?,?,?)",
                [(d.meter.lower(), d.seq, d.timestamp, d.energy_wh, d.export_wh, prev, sig, now)
                 for d, sig, prev in readings],
            )
            self.db.executemany(_UPSERT_CURSOR, [(m.lower(), c.seq, c.timestamp, c.energy_wh, c.export_wh)
                                                 for m, c in cursors.items()])
        self._count.add(len(readings))

    def take_in(self, readings: list[tuple[ReadingData, str, int]]) -> list[tuple[str, int]]:
        """Queue readings taken from the bus's reading log, leaving out those queued or settled already (a message
        delivered again); returns the (meter, seq) of those queued now."""
        now = time.time()
        taken: list[tuple[str, int]] = []
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # it reads then writes: take the write lock first (no busy upgrade)
            for d, sig, prev in readings:
                key = (d.meter.lower(), d.seq)
                if self.db.execute("SELECT 1 FROM settled WHERE meter=? AND seq=? AND timestamp=?",
                                   (*key, d.timestamp)).fetchone():
                    continue
                if self.db.execute(
                        "INSERT OR IGNORE INTO queue (meter, seq, timestamp, energy_wh, export_wh, prev_timestamp, "
                        "signature, received_at) VALUES (?,?,?,?,?,?,?,?)",
                        (*key, d.timestamp, d.energy_wh, d.export_wh, prev, sig, now)).rowcount:
                    taken.append(key)
        self._count.add(len(taken))
        return taken

    def queued_keys(self) -> set[tuple[str, int]]:
        """The (meter, seq) of every queued reading."""
        return {(str(m), int(s)) for m, s in self.db.execute("SELECT meter, seq FROM queue").fetchall()}

    def drop_unsent(self, meters: Collection[str]) -> int:
        """Drop the readings of ``meters`` not yet in a transaction (their partition went to another writer, which
        takes them from the log); returns how many."""
        removed = 0
        with self.db:
            self.db.execute("BEGIN")
            for meter in meters:
                removed += self.db.execute(
                    "DELETE FROM queue WHERE meter=? AND tx_hash IS NULL AND mined_block IS NULL", (meter.lower(),)
                ).rowcount
        self._count.add(-removed)
        return removed

    def get(self, meter: str, seq: int) -> QueuedReading | None:
        """A queued reading, if still queued."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM queue WHERE meter=? AND seq=?",
            (meter.lower(), seq),
        ).fetchone()
        return _row(row) if row else None

    def pending(self, limit: int, skip: Collection[str] = ()) -> list[QueuedReading]:
        """The oldest readings not yet in a transaction, in arrival order, leaving out those of the meters in
        ``skip`` (lower case: the batcher's busy meters, whose readings must wait for their batch in flight)."""
        if not skip or len(skip) > MAX_SKIPPED:
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM queue WHERE tx_hash IS NULL ORDER BY rowid LIMIT ?",
                (limit,),
            ).fetchall()
        else:
            rows = self.db.execute(
                f"SELECT {_COLUMNS} FROM queue WHERE tx_hash IS NULL AND meter NOT IN ({','.join('?' * len(skip))}) "
                "ORDER BY rowid LIMIT ?",
                (*skip, limit),
            ).fetchall()
        return [_row(r) for r in rows]

    def mark_submitted(self, readings: list[QueuedReading], tx_hash: str | None) -> None:
        """Record the transaction carrying these readings (None puts them back to pending)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "UPDATE queue SET tx_hash=? WHERE meter=? AND seq=?",
                [(tx_hash, r.data.meter.lower(), r.data.seq) for r in readings],
            )

    def reset_submitted(self) -> int:
        """Put every reading back to pending (on start: their transaction's fate is unknown)."""
        with self.db:
            return int(self.db.execute("UPDATE queue SET tx_hash=NULL, mined_block=NULL "
                                       "WHERE tx_hash IS NOT NULL").rowcount)

    def mark_mined(self, readings: list[tuple[str, int]], tx_hash: str, block: int) -> None:
        """Record that these (meter, seq) readings were mined in ``block`` (they stay until it is final)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("UPDATE queue SET tx_hash=?, mined_block=? WHERE meter=? AND seq=?",
                                [(tx_hash, block, meter.lower(), seq) for meter, seq in readings])

    def mark_on_chain(self, meter: str, seq: int, block: int) -> int:
        """Count readings of ``meter`` up to ``seq`` as mined in ``block`` (found on chain, not final yet)."""
        with self.db:
            return int(self.db.execute(
                "UPDATE queue SET tx_hash=COALESCE(tx_hash, 'on_chain'), mined_block=? "
                "WHERE meter=? AND seq<=? AND mined_block IS NULL", (block, meter.lower(), seq)).rowcount)

    def remove_final(self, final: int, txs: Sequence[SettledTx] = (), keep_since: float | None = None) -> int:
        """Drop the readings mined in blocks up to ``final`` (they are final now); with ``keep_since``, keep them
        (and ``txs``, the transactions that carried them) in the settled journal, and prune what it holds from
        before that time."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            if keep_since is not None:
                self.db.execute(
                    f"INSERT OR REPLACE INTO settled ({_COLUMNS}, mined_block, settled_at) "
                    f"SELECT {_COLUMNS}, mined_block, ? FROM queue WHERE mined_block<=?", (now, final))
                self.db.executemany(
                    "INSERT OR REPLACE INTO sent_txs (tx_hash, nonce, gas, data, block, settled_at) "
                    "VALUES (?,?,?,?,?,?)",
                    [(t.tx_hash, t.nonce, t.gas, t.data, t.block, now) for t in txs])
                self.db.execute("DELETE FROM settled WHERE settled_at<?", (keep_since,))
                self.db.execute("DELETE FROM sent_txs WHERE settled_at<?", (keep_since,))
            removed = int(self.db.execute("DELETE FROM queue WHERE mined_block<=?", (final,)).rowcount)
        self._count.add(-removed)
        return removed

    def reopen_after(self, fork: int, remined: dict[str, int]) -> tuple[list[tuple[SettledTx, list[tuple[str, int]]]],
                                                                         list[tuple[str, int]]]:
        """A reorganisation deeper than finality replaced blocks after ``fork``: the settled readings mined in them
        go back into the queue, in flight with their transaction, which is returned with its readings to be sent
        again (oldest nonce first); those whose transaction the new chain holds (``remined``: hash -> block) stay
        settled, at their new block. Also returns readings settled after ``fork`` whose transaction is not kept
        (they go back to pending)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("UPDATE settled SET mined_block=? WHERE tx_hash=?",
                                [(block, tx) for tx, block in remined.items()])
            self.db.executemany("UPDATE sent_txs SET block=? WHERE tx_hash=?",
                                [(block, tx) for tx, block in remined.items()])
            spared = f" AND tx_hash NOT IN ({','.join('?' * len(remined))})" if remined else ""
            vanished = f"mined_block>?{spared}"
            params = (fork, *remined)
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM settled WHERE {vanished} ORDER BY rowid",
                                   params).fetchall()
            txs = {r[0]: SettledTx(r[0], int(r[1]), int(r[2]), bytes(r[3]), int(r[4])) for r in self.db.execute(
                f"SELECT tx_hash, nonce, gas, data, block FROM sent_txs WHERE block>?{spared}",
                params)}
            carried: dict[str, list[tuple[str, int]]] = {}
            orphans: list[tuple[str, int]] = []
            for row in rows:
                meter, seq, tx_hash = str(row[0]), int(row[1]), row[8]
                (carried.setdefault(tx_hash, []) if tx_hash in txs else orphans).append((meter, seq))
            back = int(self.db.execute(f"INSERT OR IGNORE INTO queue ({_COLUMNS}) SELECT {_COLUMNS} FROM settled "
                                       f"WHERE {vanished}", params).rowcount)
            self.db.executemany("UPDATE queue SET tx_hash=NULL, mined_block=NULL WHERE meter=? AND seq=?",
                                [(meter.lower(), seq) for meter, seq in orphans])
            self.db.execute(f"DELETE FROM settled WHERE {vanished}", params)
            self.db.execute(f"DELETE FROM sent_txs WHERE block>?{spared}", params)
        self._count.add(back)
        ordered = sorted(((txs[h], readings) for h, readings in carried.items()), key=lambda entry: entry[0].nonce)
        return ordered, orphans

    def settled_count(self) -> int:
        """How many final readings the journal keeps for a deep reorganisation."""
        return int(self.db.execute("SELECT COUNT(*) FROM settled").fetchone()[0])

    def mark_recorded(self, found: list[tuple[str, int, int, str]]) -> int:
        """Count queued (meter, seq) readings as mined in (block, tx hash): their own event is on chain, not final."""
        with self.db:
            self.db.execute("BEGIN")
            return sum(int(self.db.execute("UPDATE queue SET tx_hash=?, mined_block=? WHERE meter=? AND seq=?",
                                           (tx, block, meter.lower(), seq)).rowcount)
                       for meter, seq, block, tx in found)

    def queued_of(self, meter: str) -> list[QueuedReading]:
        """A meter's queued readings, by sequence number."""
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM queue WHERE meter=? ORDER BY seq", (meter.lower(),))
        return [_row(r) for r in rows.fetchall()]

    def unmine_after(self, fork: int, remined: dict[str, int], keep: dict[str, list[tuple[str, int]]] | None = None
                     ) -> int:
        """Blocks after ``fork`` were replaced: readings mined in them go back to pending, except those whose
        transaction (``remined``: hash -> block) the new chain holds too, and those of the transactions in
        ``keep`` (hash -> their readings), which are sent again and stay submitted; returns how many went back."""
        kept = [tx for tx, block in remined.items() if block > fork]
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("UPDATE queue SET mined_block=? WHERE mined_block>? AND tx_hash=?",
                                [(remined[tx], fork, tx) for tx in kept])
            self.db.executemany("UPDATE queue SET mined_block=NULL WHERE meter=? AND seq=? AND mined_block>?",
                                [(meter.lower(), seq, fork) for readings in (keep or {}).values()
                                 for meter, seq in readings])
            spared = f" AND tx_hash NOT IN ({','.join('?' * len(kept))})" if kept else ""
            return int(self.db.execute(f"UPDATE queue SET tx_hash=NULL, mined_block=NULL WHERE mined_block>?{spared}",
                                       (fork, *kept)).rowcount)

    def put_back(self, readings: list[tuple[str, int]]) -> None:
        """Put these (meter, seq) readings back to pending."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("UPDATE queue SET tx_hash=NULL, mined_block=NULL WHERE meter=? AND seq=?",
                                [(meter.lower(), seq) for meter, seq in readings])

    def mined_count(self) -> int:
        """How many queued readings are mined and wait for their block to be final."""
        return int(self.db.execute("SELECT COUNT(*) FROM queue WHERE mined_block IS NOT NULL").fetchone()[0])

    def remove_many(self, readings: list[tuple[str, int]]) -> int:
        """Drop several (meter, seq) readings in one transaction."""
        with self.db:
            self.db.execute("BEGIN")
            removed = 0
            for meter, seq in readings:
                removed += self.db.execute("DELETE FROM queue WHERE meter=? AND seq=?", (meter.lower(), seq)).rowcount
        self._count.add(-removed)
        return removed

    def remove_upto(self, meter: str, seq: int) -> int:
        """Drop every queued reading of ``meter`` with a sequence number up to ``seq``."""
        with self.db:
            removed = self.db.execute("DELETE FROM queue WHERE meter=? AND seq<=?", (meter.lower(), seq)).rowcount
        self._count.add(-removed)
        return int(removed)

    def restart_cursor(self, meter: str, cursor: Cursor) -> int:
        """A meter's register and sequence restarted on chain (``RegisterReset``, or a new meter's ``MeterExchanged``):
        its cursor becomes ``cursor``, and its readings still waiting to be submitted from before the final read
        (which the chain can only refuse as stale) are dropped; returns how many."""
        key = meter.lower()
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(_UPSERT_CURSOR, (key, cursor.seq, cursor.timestamp, cursor.energy_wh, cursor.export_wh))
            removed = self.db.execute("DELETE FROM queue WHERE meter=? AND tx_hash IS NULL AND timestamp<=?",
                                      (key, cursor.timestamp)).rowcount
        self._count.add(-removed)
        return int(removed)

    def oldest_received_at(self) -> float | None:
        """When the reading queued longest was received (None when the queue is empty)."""
        row = self.db.execute("SELECT received_at FROM queue ORDER BY rowid LIMIT 1").fetchone()
        return float(row[0]) if row else None

    def queued_meters(self) -> list[str]:
        """Meters with readings in the queue."""
        return [r[0] for r in self.db.execute("SELECT DISTINCT meter FROM queue").fetchall()]

    def count(self) -> int:
        """How many readings are queued."""
        return self._count.value

    def counted(self, n: int) -> None:
        """Another process (a gateway worker) queued ``n`` readings."""
        self._count.add(n)

    def recount(self, value: int | None = None) -> None:
        """Set the count: to ``value`` (as the process that removes readings counts them), or by counting."""
        if value is None:
            value = int(self.db.execute("SELECT COUNT(*) FROM queue").fetchone()[0])
        self._count.set(value)

    def mined_block(self, meter: str, seq: int) -> int | None:
        """The block a queued reading was mined in (None: not mined, or not queued)."""
        row = self.db.execute("SELECT mined_block FROM queue WHERE meter=? AND seq=?", (meter.lower(), seq)).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    # ---------------------------------------------------------------- cursors

    def cursor(self, meter: str) -> Cursor | None:
        """The last reading the gateway accepted from ``meter``, if any."""
        row = self.db.execute(
            "SELECT seq, timestamp, energy_wh, export_wh FROM cursor WHERE meter=?", (meter.lower(),)
        ).fetchone()
        return Cursor(*row) if row else None

    # ---------------------------------------------------------------- relay position

    def position(self, name: str) -> tuple[int, int] | None:
        """The (block, log index) of the last log the named consumer processed."""
        row = self.db.execute("SELECT block, log_index FROM position WHERE name=?", (name,)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def relay_trail(self, name: str) -> list[tuple[int, str]]:
        """(number, hash) of the recent blocks the named follower read, oldest first."""
        return [(int(n), str(h)) for n, h in self.db.execute(
            "SELECT number, hash FROM relay_blocks WHERE name=? ORDER BY number", (name,))]

    def save_relay_state(self, name: str, position: tuple[int, int], trail: dict[int, str],
                         saved: dict[int, str]) -> None:
        """Record the follower's position and its trail of recent blocks (``saved``: the trail last recorded)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO position (name, block, log_index) VALUES (?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET block=excluded.block, log_index=excluded.log_index",
                (name, *position),
            )
            self.db.executemany("DELETE FROM relay_blocks WHERE name=? AND number=?",
                                [(name, n) for n in saved if n not in trail])
            self.db.executemany("INSERT OR REPLACE INTO relay_blocks (name, number, hash) VALUES (?,?,?)",
                                [(name, n, h) for n, h in trail.items() if saved.get(n) != h])

    def set_position(self, name: str, block: int, log_index: int) -> None:
        """Record the last processed log."""
        with self.db:
            self.db.execute(
                "INSERT INTO position (name, block, log_index) VALUES (?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET block=excluded.block, log_index=excluded.log_index",
                (name, block, log_index),
            )


def queue_unusable(path: Path, err: sqlite3.DatabaseError) -> StorageError:
    """The error, in plain words with what to do, for a queue database that cannot be opened or read."""
    if isinstance(err, sqlite3.OperationalError):
        return StorageError(
            f"cannot use the gateway's queue {path} ({err}): check that the data directory is writable, that the disk "
            "is not full and that no other process (another server on the same DATA_DIR) holds the file")
    return StorageError(
        f"the gateway's queue {path} is damaged ({err}): move the file aside with its -wal and -shm files (for "
        f"example to {path.name}.damaged) and start the server again; readings in it that are not on chain yet are "
        "resent by the meters from their outboxes when they reconnect")


def _row(row: tuple) -> QueuedReading:  # type: ignore[type-arg]
    meter, seq, ts, wh, export, prev, sig, received, tx = row
    return QueuedReading(ReadingData(meter, int(seq), int(ts), int(wh), int(export)), sig, float(received), tx,
                         int(prev))


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring a queue written by an older version to this layout.

    A version-1 queue holds readings signed without an export register, under the old EIP-712
    type: no contract that takes the new type can record them, and the meters keep them in their
    outboxes until they are on chain. So they are moved aside into ``queue_v1`` (kept, not
    submitted) and logged, and the cursors are dropped (they are rebuilt from the chain at login).
    """
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if version < SCHEMA_VERSION and "queue" in tables:
        with db:
            db.execute("BEGIN")
            db.execute("DROP TABLE IF EXISTS queue_v1")
            db.execute("ALTER TABLE queue RENAME TO queue_v1")
            db.execute("DROP TABLE IF EXISTS cursor")
        kept = int(db.execute("SELECT COUNT(*) FROM queue_v1").fetchone()[0])
        log_event(log, "queue_migrated", logging.WARNING, path=str(path), kept_aside=kept,
                  reason="readings queued by the previous version were signed without exportWh; they stay in "
                         "queue_v1 and the meters resend what the chain lacks")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
