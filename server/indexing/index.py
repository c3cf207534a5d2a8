"""The index: the contract's events in SQLite or PostgreSQL, shaped for questions (a cache of the chain).

Every table but ``thresholds`` is derived from events and can be rebuilt from the chain
(``scripts/reindex.py``). ``apply`` takes events in chain order and writes them, with the
position of the last one, in one transaction: a batch is applied whole or not at all, and an
event at or before the recorded position is skipped, so applying is idempotent and a restart
resumes where the last commit left off.

Besides storing events, applying them keeps the tariff schedule (versions, day-ahead prices,
clock changes: ``common.tariff.Schedule``); for each meter the open billing period's breakdown
(import cost and export credit from each ``ReadingRecorded``, checked against the reference
arithmetic of ``common.tariff``, and the standing charge, which depends only on time);
half-hourly settlement data (each reading split over periods as the contract splits it, priced
at each period's price); hourly totals (``server.indexing.history``); and the consumption alerts of
``server.indexing.monitor``.

**Undoing replaced blocks.** Events of blocks that are not final yet (``apply``'s ``final``) are
written with an undo journal: SQLite triggers on every derived table copy each row's image
before it changes (or the key of a row inserted) into ``journal``, keyed by the block being
applied, and the hash of each such block goes into ``blocks``. ``rollback(fork)`` replays the
journal of the blocks after ``fork`` backwards, which puts every row (readings, hourly totals,
periods, meter state, consumption alerts, the position) back as it was, whatever the event set
that changed them; ``finalize`` forgets the journal of blocks that became final. Events of final
blocks are written without it, so a chain with ``CONFIRMATIONS=0`` pays nothing. A fork below
the final block cannot be undone this way: the index is then rebuilt from the chain.

**Two engines.** SQLite (a file under ``DATA_DIR/index/``) is the embedded default; with
``INDEX_URL=postgresql://...`` the same tables live in PostgreSQL (``server.indexing.index_db``), whose
schema Alembic's migrations make and whose journal is one PL/pgSQL trigger function writing
``jsonb``. Every statement here is written once in SQL both accept, so both answer the same.

**One writer, several readers.** Several server processes may share one PostgreSQL index (to
serve the API and dashboard from more than one process): the first to open it holds an advisory
lock for as long as it runs and is its writer; the others open it as readers. A reader writes
no events (its ``apply``, ``finalize``, ``rollback`` and ``reset`` only look at what the writer
committed) and reloads what it keeps in memory (meters, tariffs, limits) when the writer's
position moved, looking at most once per ``READER_REFRESH`` seconds; every query reads committed
rows at once (autocommit). Hourly limits set through any process are written to the shared table
and the writer reads them back before each batch it applies.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from common.billing import from_text32
from common.events import ChainEvent, unpack_record
from common.logs import log_event
from common.messages import ConsumptionAlert
from common.statement import MeterRestart, RecordedReading
from common.tariff import (
    ClockTable,
    RejectReason,
    Schedule,
    TariffVersion,
    cost_of,
    split_pair,
    standing_charge,
)
from server.indexing.history import energy_in_hours, spread_over_hours
from server.indexing.index_db import IndexDb, PostgresDb, SqliteDb, describe_url
from server.indexing.monitor import Rules, Trend, evaluate

__all__ = ["Index", "MeterRecord", "Period", "Applied", "TIME_EVENTS", "JOURNALED_TABLES"]

log = logging.getLogger("index")

#: Events whose time is their block's (the indexer looks these blocks up; readings carry their own).
TIME_EVENTS = frozenset({"MeterRegistered", "MeterDeactivated", "MeterReactivated", "TariffChanged", "BillIssued",
                         "GridAlert", "GridAlertCleared", "MeterExchanged", "RegisterReset"})
POSITION = "index"
#: The tables' layout; an index written with another is emptied and rebuilt from the chain.
LAYOUT = "3"
#: Seconds a reader of a shared PostgreSQL index goes at most without looking for the writer's new events.
READER_REFRESH = 1.0
#: The advisory lock the writer of a PostgreSQL index holds (any constant; "smwrt" in ASCII).
WRITER_LOCK = 0x736D777274

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meters (
    address TEXT PRIMARY KEY, account_ref TEXT NOT NULL, region TEXT NOT NULL,
    opening_wh INTEGER NOT NULL, opened_at INTEGER NOT NULL, registered_at INTEGER NOT NULL,
    active INTEGER NOT NULL, status_changed_at INTEGER NOT NULL,
    last_seq INTEGER NOT NULL, last_timestamp INTEGER NOT NULL, last_energy_wh INTEGER NOT NULL,
    last_block INTEGER, last_tx TEXT, rejected INTEGER NOT NULL DEFAULT 0, last_export_wh INTEGER NOT NULL DEFAULT 0,
    replaced_by TEXT
);
CREATE TABLE IF NOT EXISTS readings (
    meter TEXT NOT NULL, seq INTEGER NOT NULL, timestamp INTEGER NOT NULL, register_wh INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL, interval_start INTEGER NOT NULL, period_id INTEGER NOT NULL,
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, tx_hash TEXT NOT NULL,
    export_register_wh INTEGER NOT NULL, export_wh INTEGER NOT NULL, import_cost INTEGER NOT NULL,
    export_credit INTEGER NOT NULL, source TEXT NOT NULL DEFAULT 'meter',
    PRIMARY KEY (meter, timestamp)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS halfhourly (
    meter TEXT NOT NULL, period INTEGER NOT NULL, import_wh INTEGER NOT NULL, export_wh INTEGER NOT NULL,
    import_cost INTEGER NOT NULL, export_credit INTEGER NOT NULL, longest_interval INTEGER NOT NULL,
    PRIMARY KEY (meter, period)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS day_ahead (
    period INTEGER NOT NULL, side INTEGER NOT NULL, price INTEGER NOT NULL, PRIMARY KEY (period, side)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clock_changes (at INTEGER PRIMARY KEY, offset_minutes INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS readings_by_time ON readings (meter, timestamp);
CREATE TABLE IF NOT EXISTS rejections (
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, meter TEXT NOT NULL, seq INTEGER NOT NULL,
    reason TEXT NOT NULL, tx_hash TEXT NOT NULL, PRIMARY KEY (block, log_index)
);
CREATE TABLE IF NOT EXISTS hourly (
    meter TEXT NOT NULL, hour_start INTEGER NOT NULL, energy_wh INTEGER NOT NULL,
    PRIMARY KEY (meter, hour_start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS restarts (
    block INTEGER NOT NULL, log_index INTEGER NOT NULL, meter TEXT NOT NULL, kind TEXT NOT NULL, new_meter TEXT,
    at INTEGER NOT NULL, last_seq INTEGER NOT NULL, final_import_wh INTEGER NOT NULL,
    final_export_wh INTEGER NOT NULL, import_wh INTEGER NOT NULL, export_wh INTEGER NOT NULL,
    opening_import_wh INTEGER NOT NULL, opening_export_wh INTEGER NOT NULL, period_id INTEGER NOT NULL,
    tx_hash TEXT NOT NULL, PRIMARY KEY (block, log_index)
);
CREATE TABLE IF NOT EXISTS periods (
    meter TEXT NOT NULL, period_id INTEGER NOT NULL, period_start INTEGER NOT NULL, period_end INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL, energy_cost INTEGER NOT NULL, standing_charge INTEGER NOT NULL,
    amount_due INTEGER NOT NULL, status TEXT NOT NULL, issued_at INTEGER, issued_tx TEXT,
    export_wh INTEGER NOT NULL DEFAULT 0, export_credit INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (meter, period_id)
);
CREATE TABLE IF NOT EXISTS tariffs (
    version INTEGER PRIMARY KEY, unit_rate INTEGER NOT NULL, standing_charge INTEGER NOT NULL,
    effective_from INTEGER NOT NULL, block INTEGER NOT NULL, tx_hash TEXT NOT NULL, spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS grid_alerts (
    id INTEGER PRIMARY KEY, severity INTEGER NOT NULL, kind TEXT NOT NULL, region TEXT NOT NULL,
    message TEXT NOT NULL, expires_at INTEGER NOT NULL, raised_at INTEGER NOT NULL, raised_tx TEXT NOT NULL,
    cleared_at INTEGER
);
CREATE TABLE IF NOT EXISTS consumption_alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, meter TEXT NOT NULL, kind TEXT NOT NULL, key INTEGER NOT NULL,
    at INTEGER NOT NULL, energy_wh INTEGER NOT NULL, limit_wh INTEGER NOT NULL, power_w INTEGER NOT NULL,
    message TEXT NOT NULL, UNIQUE (meter, kind, key)
);
CREATE TABLE IF NOT EXISTS thresholds (
    meter TEXT PRIMARY KEY, hourly_limit_wh INTEGER NOT NULL, updated_at INTEGER NOT NULL, updated_by TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS position (name TEXT PRIMARY KEY, block INTEGER NOT NULL, log_index INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT, block INTEGER NOT NULL, tbl TEXT NOT NULL, op TEXT NOT NULL,
    key TEXT NOT NULL, image TEXT
);
CREATE INDEX IF NOT EXISTS journal_by_block ON journal (block);
CREATE TABLE IF NOT EXISTS journal_block (id INTEGER PRIMARY KEY CHECK (id = 1), block INTEGER);
INSERT INTO journal_block VALUES (1, NULL) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash TEXT NOT NULL);
"""

#: Tables rebuilt from the chain; ``thresholds`` is the operators' and customers' own setting.
DERIVED_TABLES = ("meters", "readings", "rejections", "hourly", "halfhourly", "periods", "tariffs", "day_ahead",
                  "clock_changes", "grid_alerts", "consumption_alerts", "position", "journal", "blocks", "restarts")
#: Tables whose changes by events of blocks not yet final are journaled, to be undone if the blocks are replaced.
JOURNALED_TABLES = ("meters", "readings", "rejections", "hourly", "halfhourly", "periods", "tariffs", "day_ahead",
                    "clock_changes", "grid_alerts", "consumption_alerts", "position", "restarts")


@dataclass(frozen=True)
class _Shape:
    """A journaled table's columns and primary key."""

    table: str
    columns: tuple[str, ...]
    key: tuple[str, ...]


def _shapes(db: IndexDb) -> dict[str, _Shape]:
    out = {}
    for table in JOURNALED_TABLES:
        columns, key = db.shape(table)
        out[table] = _Shape(table, columns, key)
    return out


def upsert(table: str, columns: tuple[str, ...], key: tuple[str, ...]) -> str:
    """``INSERT`` of a whole row that replaces the row with the same key (SQL both engines accept)."""
    update = ", ".join(f"{c}=excluded.{c}" for c in columns if c not in key)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {update}")


def _json(value: Any) -> Any:
    """A journal key or image: text in SQLite, already decoded from ``jsonb`` in PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else value


def _journal_triggers(shape: _Shape) -> list[str]:
    """The SQL of the triggers that journal ``shape``'s changes while ``journal_block`` names a block."""
    t = shape.table

    def obj(row: str, names: tuple[str, ...]) -> str:
        return "json_object(" + ", ".join(f"'{c}', {row}.{c}" for c in names) + ")"

    when = "WHEN (SELECT block FROM journal_block) IS NOT NULL"
    insert = "INSERT INTO journal (block, tbl, op, key, image) VALUES ((SELECT block FROM journal_block), "
    return [
        f"DROP TRIGGER IF EXISTS journal_{t}_i", f"DROP TRIGGER IF EXISTS journal_{t}_u",
        f"DROP TRIGGER IF EXISTS journal_{t}_d",
        f"CREATE TRIGGER journal_{t}_i AFTER INSERT ON {t} {when} BEGIN "
        f"{insert}'{t}', 'i', {obj('NEW', shape.key)}, NULL); END",
        f"CREATE TRIGGER journal_{t}_u AFTER UPDATE ON {t} {when} BEGIN "
        f"{insert}'{t}', 'u', {obj('NEW', shape.key)}, {obj('OLD', shape.columns)}); END",
        f"CREATE TRIGGER journal_{t}_d AFTER DELETE ON {t} {when} BEGIN "
        f"{insert}'{t}', 'd', {obj('OLD', shape.key)}, {obj('OLD', shape.columns)}); END",
    ]


@dataclass
class Period:
    """A billing period of one meter: import (``energy_wh``, ``energy_cost``), export
    (``export_wh``, ``export_credit``), standing charge and the amount due (micropence; negative
    when in credit)."""

    meter: str
    period_id: int
    period_start: int
    period_end: int
    energy_wh: int = 0
    energy_cost: int = 0
    standing_charge: int = 0
    amount_due: int = 0
    status: str = "open"
    issued_at: int | None = None
    issued_tx: str | None = None
    export_wh: int = 0
    export_credit: int = 0


@dataclass
class MeterRecord:
    """A meter as the index knows it: registration, status, last reading and open period."""

    address: str
    account_ref: str
    region: str
    opening_wh: int
    opened_at: int
    registered_at: int
    active: bool
    status_changed_at: int
    last_seq: int
    last_timestamp: int
    last_energy_wh: int
    last_block: int | None
    last_tx: str | None
    rejected: int
    period: Period
    last_export_wh: int = 0
    #: The meter that took over this one's account in an exchange (this one is then retired).
    replaced_by: str | None = None


@dataclass
class Applied:
    """What applying a batch changed that someone may want to hear about at once."""

    bills: list[MeterRecord] = field(default_factory=list)
    grid_alerts: list[dict[str, Any]] = field(default_factory=list)
    consumption_alerts: list[tuple[int, ConsumptionAlert]] = field(default_factory=list)
    meters: list[MeterRecord] = field(default_factory=list)
    tariffs: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0


_READING_COLUMNS = ("meter, seq, timestamp, register_wh, energy_wh, interval_start, period_id, block, log_index, "
                    "tx_hash, export_register_wh, export_wh, import_cost, export_credit, source")
_ALERT_KEYS = ("id", "severity", "kind", "region", "message", "expires_at", "raised_at", "raised_tx", "cleared_at")
_METER_COLUMNS = ("address, account_ref, region, opening_wh, opened_at, registered_at, active, status_changed_at, "
                  "last_seq, last_timestamp, last_energy_wh, last_block, last_tx, rejected")
_PERIOD_COLUMNS = ("meter, period_id, period_start, period_end, energy_wh, energy_cost, standing_charge, amount_due, "
                   "status, issued_at, issued_tx, export_wh, export_credit")
_UPSERT_META = upsert("meta", ("name", "value"), ("name",))
_UPSERT_BLOCK = upsert("blocks", ("number", "hash"), ("number",))
_UPSERT_PERIOD = upsert("periods", tuple(_PERIOD_COLUMNS.split(", ")), ("meter", "period_id"))
_UPSERT_THRESHOLD = upsert("thresholds", ("meter", "hourly_limit_wh", "updated_at", "updated_by"), ("meter",))
_UPSERT_METER = upsert("meters", (*_METER_COLUMNS.split(", "), "last_export_wh", "replaced_by"), ("address",))
_RESTART_KEYS = ("block", "log_index", "meter", "kind", "new_meter", "at", "last_seq", "final_import_wh",
                 "final_export_wh", "import_wh", "export_wh", "opening_import_wh", "opening_export_wh", "period_id",
                 "tx_hash")
_UPSERT_TARIFF = upsert("tariffs", ("version", "unit_rate", "standing_charge", "effective_from", "block", "tx_hash",
                                    "spec"), ("version",))
_UPSERT_DAY_AHEAD = upsert("day_ahead", ("period", "side", "price"), ("period", "side"))
_UPSERT_CLOCK = upsert("clock_changes", ("at", "offset_minutes"), ("at",))
_UPSERT_GRID_ALERT = upsert("grid_alerts", _ALERT_KEYS, ("id",))


class Index:
    """The index of contract events (SQLite, or PostgreSQL with ``url``); one instance per process, used from
    one thread."""

    def __init__(self, path: Path, tz: ZoneInfo, rules: Rules | None = None, default_limit_wh: int = 0,
                 source: str = "", journal: bool = True, url: str = "") -> None:
        """Open (or create) the index; ``source`` names the chain and contract its events come from.

        ``path`` is the SQLite file; ``url`` (``postgresql://...``), when given, is used instead,
        its schema brought up to date by the migrations in ``server/indexing/index_migrations``.

        ``journal`` false (``CONFIRMATIONS=0``: every block is final at once) leaves out the undo
        journal's triggers, so that writing an event costs what it did before there was one (in
        PostgreSQL the triggers stay and return at once, as no block is being journaled).

        An index holding another source's events (the chain was reset, the contract redeployed)
        is emptied of them first, so that it is rebuilt from the new one.
        """
        self.path = path
        self.url = url
        #: Where the index is, for messages (a PostgreSQL URL without its password).
        self.location = describe_url(url) if url else str(path)
        self.tz = tz
        self.rules = rules or Rules()
        self.default_limit_wh = default_limit_wh
        self.journal = journal
        self.db: IndexDb
        #: Whether this process writes the index (false: another process does, and this one only reads it).
        self.writer = True
        self._seen: tuple[Any, ...] = ()
        self._checked = time.monotonic()
        if url:
            self.db = PostgresDb(url)
            self.writer = bool(self.db.execute("SELECT pg_try_advisory_lock(?)", (WRITER_LOCK,)).fetchone()[0])
            if not self.writer:
                log_event(log, "index_reader", database=self.location,
                          reason="another process writes this index; this one reads what it commits")
        else:
            self.db = self._open_sqlite(path, journal)
        self._shapes = _shapes(self.db)
        if self.writer:
            with self.db:
                self.db.execute("UPDATE journal_block SET block=NULL")
        self._load()
        row = self.db.execute("SELECT value FROM meta WHERE name='source'").fetchone()
        if not self.writer:
            if row is not None and row[0] != source:
                log_event(log, "index_other_source", logging.WARNING, database=self.location, was=row[0],
                          now=source, hint="the writer of this index follows another chain or contract")
            return
        if row is not None and row[0] != source:
            log_event(log, "index_reset", was=row[0], now=source, reason="the index holds another chain's events")
            self.reset()
        with self.db:
            self.db.execute(_UPSERT_META, ("source", source))

    @staticmethod
    def _open_sqlite(path: Path, journal: bool) -> SqliteDb:
        """The SQLite file with the tables of ``LAYOUT`` (emptied first if another layout wrote it) and the
        journal's triggers (or none)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = SqliteDb(path)
        if "meta" in db.tables():
            layout = db.execute("SELECT value FROM meta WHERE name='layout'").fetchone()
            if layout is None or layout[0] != LAYOUT:
                log_event(log, "index_layout_changed", was=layout[0] if layout else "1", now=LAYOUT,
                          reason="an older version wrote this index; it is rebuilt from the chain")
                with db:
                    for table in DERIVED_TABLES:
                        db.execute(f"DROP TABLE IF EXISTS {table}")  # noqa: S608 - fixed table names
        db.executescript(_SCHEMA)
        with db:
            db.execute(_UPSERT_META, ("layout", LAYOUT))
            for shape in _shapes(db).values():
                for statement in _journal_triggers(shape) if journal else _journal_triggers(shape)[:3]:
                    db.execute(statement)  # without the journal: only the DROPs
        return db

    def _mark(self) -> tuple[Any, ...]:
        """What tells a reader that the writer committed something: the position and the final block."""
        return (self.position(), self.db.execute("SELECT value FROM meta WHERE name='final'").fetchone())

    def refresh(self, force: bool = False) -> None:
        """A reader: reload what is kept in memory if the writer moved on (looked at most once per
        ``READER_REFRESH`` seconds unless ``force``); the writer: nothing to do."""
        if self.writer or (not force and time.monotonic() - self._checked < READER_REFRESH):
            return
        self._checked = time.monotonic()
        if self._mark() != self._seen:
            self._load()

    def _load(self) -> None:
        if not self.writer:
            self._seen = self._mark()
        self._meters: dict[str, MeterRecord] = {m.address.lower(): m for m in self._query_meters("", ())}
        versions = [_version_from_spec(r[0]) for r in self.db.execute("SELECT spec FROM tariffs ORDER BY version")]
        clock = ClockTable(tuple((int(a), int(m)) for a, m in self.db.execute(
            "SELECT at, offset_minutes FROM clock_changes ORDER BY at")))
        #: Everything that prices a period, as the chain published it (shared with the relay).
        self.schedule = getattr(self, "schedule", None) or Schedule([])
        self.schedule.versions[:] = versions
        self.schedule.clock = clock
        self.schedule.day_ahead_import.clear()
        self.schedule.day_ahead_export.clear()
        for period, side, price in self.db.execute("SELECT period, side, price FROM day_ahead"):
            (self.schedule.day_ahead_export if side else self.schedule.day_ahead_import)[int(period)] = int(price)
        self._limits = {m: int(w) for m, w in self.db.execute("SELECT meter, hourly_limit_wh FROM thresholds")}
        self._trends: dict[str, Trend] = {}
        row = self.db.execute("SELECT value FROM meta WHERE name='final'").fetchone()
        #: The newest block known final (None: everything applied counts as final).
        self.final: int | None = int(row[0]) if row else None

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    # ---------------------------------------------------------------- writing

    def position(self) -> tuple[int, int] | None:
        """The (block, log index) of the last applied event."""
        row = self.db.execute("SELECT block, log_index FROM position WHERE name=?", (POSITION,)).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def reset(self) -> None:
        """Forget everything derived from the chain (thresholds stay), to rebuild from the chain."""
        if not self.writer:
            self.refresh(force=True)
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("UPDATE journal_block SET block=NULL")
            for table in DERIVED_TABLES:
                self.db.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            self.db.execute("DELETE FROM meta WHERE name='final'")
        self._load()

    def apply(self, events: list[ChainEvent], block_times: dict[int, int], final: int | None = None) -> Applied:
        """Write events (in chain order) and the new position in one transaction; skips seen ones.

        ``block_times`` maps the blocks of ``TIME_EVENTS`` events to their timestamps. Events of
        blocks after ``final`` are journaled so that ``rollback`` can undo them (None: all final).
        """
        out = Applied()
        if not self.writer:
            self.refresh(force=True)
            return out
        if self.url:  # a reader may have set a limit in the shared table
            self._limits = {m: int(w) for m, w in self.db.execute("SELECT meter, hourly_limit_wh FROM thresholds")}
        position = self.position() or (-1, -1)
        todo = [e for e in events if e.position > position]
        if not todo:
            return out
        touched: dict[str, MeterRecord] = {}
        try:
            with self.db:
                self.db.execute("BEGIN")
                journaling: int | None = None
                for i, event in enumerate(todo):
                    block = event.block if self.journal and final is not None and event.block > final else None
                    if block != journaling:
                        self.db.execute("UPDATE journal_block SET block=?", (block,))
                        journaling = block
                        if block is not None:
                            self.db.execute(_UPSERT_BLOCK, (block, event.block_hash))
                    self._apply_one(event, block_times.get(event.block, 0), out, touched)
                    last_of_block = i + 1 == len(todo) or todo[i + 1].block != event.block
                    if last_of_block and (journaling is not None or i + 1 == len(todo)):
                        # A journaled block moves the position itself, so that undoing it puts the position back
                        # to the end of the block before.
                        self._set_position(event)
                if journaling is not None:
                    self.db.execute("UPDATE journal_block SET block=NULL")
        except BaseException:
            self._load()  # the transaction rolled back: drop what memory took from it
            raise
        out.events = len(todo)
        return out

    def _set_position(self, event: ChainEvent) -> None:
        self.db.execute("INSERT INTO position (name, block, log_index) VALUES (?,?,?) ON CONFLICT(name) DO UPDATE "
                        "SET block=excluded.block, log_index=excluded.log_index",
                        (POSITION, event.block, event.log_index))

    # ---------------------------------------------------------------- replaced blocks

    def is_final(self, block: int | None) -> bool:
        """Whether what block ``block`` brought is final (no block, or no finality known: yes)."""
        return block is None or self.final is None or block <= self.final

    def finalize(self, final: int) -> None:
        """Blocks up to ``final`` are final: forget their journal (the hash of the newest is kept)."""
        if self.final is not None and final <= self.final:
            return
        if not self.writer:
            self.refresh(force=True)
            return
        if not self.journal:
            self.final = final  # nothing is journaled: nothing to forget
            return
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM journal WHERE block<=?", (final,))
            self.db.execute("DELETE FROM blocks WHERE number < (SELECT MAX(number) FROM blocks WHERE number<=?)",
                            (final,))
            self.db.execute(_UPSERT_META, ("final", str(final)))
        self.final = final

    def recent_blocks(self) -> list[tuple[int, str]]:
        """(number, hash) of the blocks whose events are journaled, and the newest final one with events."""
        return [(int(n), str(h)) for n, h in self.db.execute("SELECT number, hash FROM blocks ORDER BY number")]

    def rollback(self, fork: int) -> list[MeterRecord]:
        """Undo everything the blocks after ``fork`` brought; returns the meters whose state went back.

        Only blocks that were not final when applied can be undone: for a fork below ``final``
        rebuild the index instead (``reset`` and catch up).
        """
        affected: set[str] = set()
        if not self.writer:
            self.refresh(force=True)
            return []
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("UPDATE journal_block SET block=NULL")
            rows = self.db.execute("SELECT tbl, op, key, image FROM journal WHERE block>? ORDER BY id DESC",
                                   (fork,)).fetchall()
            for table, op, key, image in rows:
                shape = self._shapes[table]
                keys = _json(key)
                where = " AND ".join(f"{c}=?" for c in shape.key)
                if op in ("i", "u"):
                    self.db.execute(f"DELETE FROM {table} WHERE {where}",  # noqa: S608 - names from the schema
                                    [keys[c] for c in shape.key])
                if op in ("u", "d"):
                    old = _json(image)
                    self.db.execute(f"INSERT INTO {table} ({', '.join(shape.columns)}) "  # noqa: S608
                                    f"VALUES ({', '.join('?' * len(shape.columns))})",
                                    [old[c] for c in shape.columns])
                meter = keys.get("address") or keys.get("meter")
                if table in ("meters", "periods", "readings") and meter:
                    affected.add(str(meter).lower())
            self.db.execute("DELETE FROM journal WHERE block>?", (fork,))
            self.db.execute("DELETE FROM blocks WHERE number>?", (fork,))
        self._load()
        if rows:
            log_event(log, "index_rolled_back", fork=fork, changes=len(rows), meters=len(affected))
        return [m for m in (self._meters.get(a) for a in affected) if m is not None]

    def _apply_one(self, event: ChainEvent, block_time: int, out: Applied, touched: dict[str, MeterRecord]) -> None:
        args, name = event.args, event.name
        if name == "ReadingRecorded":
            self._record(event, out)
        elif name == "ReadingRejected":
            reason = RejectReason(int(args["reason"])).name.lower()
            self.db.execute("INSERT INTO rejections VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                            (event.block, event.log_index, args["meter"], int(args["seq"]), reason, event.tx_hash))
            meter = self._meters.get(args["meter"].lower())
            if meter is not None:
                meter.rejected += 1
                self.db.execute("UPDATE meters SET rejected=? WHERE address=?", (meter.rejected, meter.address))
        elif name == "MeterRegistered":
            self._register(event, block_time, out)
        elif name in ("MeterDeactivated", "MeterReactivated"):
            meter = self._meters.get(args["meter"].lower())
            if meter is not None:
                meter.active = name == "MeterReactivated"
                meter.status_changed_at = block_time
                self.db.execute("UPDATE meters SET active=?, status_changed_at=? WHERE address=?",
                                (int(meter.active), block_time, meter.address))
                out.meters.append(meter)
        elif name == "TariffChanged":
            version = TariffVersion.from_event(args)
            number = int(args["version"])
            self.db.execute(_UPSERT_TARIFF,
                            (number, version.import_rule.rate, version.standing_charge, version.effective_from,
                             event.block, event.tx_hash, json.dumps(_spec(version))))
            if number > len(self.schedule.versions):
                self.schedule.add_version(version)
            out.tariffs.append(tariff_row(number, version, event.block, event.tx_hash))
        elif name == "TariffWithdrawn":
            number = int(args["version"])
            self.db.execute("DELETE FROM tariffs WHERE version=?", (number,))
            if number == len(self.schedule.versions):
                self.schedule.versions.pop()
        elif name == "DayAheadPricesPublished":
            first = int(args["from"]) // 1_800
            for side, prices in ((0, args["importPrices"]), (1, args["exportPrices"])):
                self.db.executemany(_UPSERT_DAY_AHEAD,
                                    [(first + i, side, int(price)) for i, price in enumerate(prices)])
            self.schedule.publish(first, args["importPrices"], args["exportPrices"])
        elif name == "ClockChangeAdded":
            at, minutes = int(args["at"]), int(args["offsetMinutes"])
            self.db.execute(_UPSERT_CLOCK, (at, minutes))
            if not self.schedule.clock.changes or self.schedule.clock.changes[-1][0] < at:
                self.schedule.clock = self.schedule.clock.with_changes([(at, minutes)])
        elif name == "ClockChangeWithdrawn":
            at = int(args["at"])
            self.db.execute("DELETE FROM clock_changes WHERE at=?", (at,))
            self.schedule.clock = self.schedule.clock.without(at)
        elif name == "BillIssued":
            self._issue(event, block_time, out)
        elif name in ("MeterExchanged", "RegisterReset"):
            self._restart(event, block_time, out)
        elif name == "GridAlert":
            alert = {"id": int(args["id"]), "severity": int(args["severity"]), "kind": from_text32(args["kind"]),
                     "region": from_text32(args["region"]), "message": args["message"],
                     "expires_at": int(args["expiresAt"]), "raised_at": block_time, "raised_tx": event.tx_hash,
                     "cleared_at": None}
            self.db.execute(_UPSERT_GRID_ALERT, tuple(alert.values()))
            out.grid_alerts.append(alert)
        elif name == "GridAlertCleared":
            alert_id = int(args["id"])
            self.db.execute("UPDATE grid_alerts SET cleared_at=? WHERE id=?", (block_time, alert_id))
            out.grid_alerts.append({"id": alert_id, "cleared_at": block_time})

    def _register(self, event: ChainEvent, block_time: int, out: Applied) -> None:
        args = event.args
        address = args["meter"]
        opened = int(args["openedAt"])
        period = Period(address, 1, opened, opened)
        meter = MeterRecord(
            address=address, account_ref="0x" + bytes(args["accountRef"]).hex(), region=from_text32(args["region"]),
            opening_wh=int(args["openingWh"]), opened_at=opened, registered_at=block_time, active=True,
            status_changed_at=block_time, last_seq=0, last_timestamp=opened, last_energy_wh=int(args["openingWh"]),
            last_block=None, last_tx=None, rejected=0, period=period,
        )
        self.db.execute(_UPSERT_METER, (*_meter_row(meter), 0, None))
        self._write_period(period)
        self._meters[address.lower()] = meter
        out.meters.append(meter)

    def _record(self, event: ChainEvent, out: Applied) -> None:
        args = event.args
        meter = self._meters.get(args["meter"].lower())
        if meter is None or not self.schedule.versions:
            log_event(log, "index_unknown_meter", logging.ERROR, meter=args["meter"], block=event.block)
            return
        self._read(meter, args, event, out, "meter")

    def _read(self, meter: MeterRecord, record: dict[str, Any], event: ChainEvent, out: Applied, source: str) -> None:
        """Store a reading (``source`` "meter") or a final read ("exchange", "reset"), given by the fields of a
        ``ReadingRecorded`` record, and everything it adds to: the open period, half hours, hours and alerts."""
        args = record
        seq, ts = int(args["seq"]), int(args["timestamp"])
        register, exported = int(args["energyWh"]), int(args["exportWh"])
        start, energy, export = meter.last_timestamp, register - meter.last_energy_wh, exported - meter.last_export_wh
        p = meter.period
        cost, credit = int(args["periodImportCost"]) - p.energy_cost, int(args["periodExportCredit"]) - p.export_credit
        expected = cost_of(self.schedule, start, ts, energy, export)
        if expected != (cost, credit):
            log_event(log, "index_bill_mismatch", logging.ERROR, meter=meter.address, seq=seq,
                      chain=f"{cost}/{credit}", index=f"{expected[0]}/{expected[1]}",
                      hint="the index missed an event; rebuild it with scripts/reindex.py")
        p.energy_wh += energy
        p.export_wh += export
        p.energy_cost, p.export_credit = int(args["periodImportCost"]), int(args["periodExportCredit"])
        p.standing_charge = standing_charge(self.schedule.versions, p.period_start, ts)
        p.amount_due = p.energy_cost + p.standing_charge - p.export_credit
        p.period_end = ts
        meter.last_seq, meter.last_timestamp, meter.last_energy_wh, meter.last_export_wh = seq, ts, register, exported
        meter.last_block, meter.last_tx = event.block, event.tx_hash
        db = self.db
        db.execute(f"INSERT INTO readings ({_READING_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                   "ON CONFLICT DO NOTHING",
                   (meter.address, seq, ts, register, energy, start, p.period_id, event.block, event.log_index,
                    event.tx_hash, exported, export, cost, credit, source))
        db.execute("UPDATE meters SET last_seq=?, last_timestamp=?, last_energy_wh=?, last_export_wh=?, last_block=?, "
                   "last_tx=? WHERE address=?", (seq, ts, register, exported, event.block, event.tx_hash,
                                                 meter.address))
        self._write_period(p)
        span = ts - start
        for period, wh_in, wh_out in split_pair(start, ts, energy, export):
            price_in, price_out = self.schedule.prices(period)
            db.execute("INSERT INTO halfhourly VALUES (?,?,?,?,?,?,?) ON CONFLICT(meter, period) DO UPDATE SET "
                       "import_wh=halfhourly.import_wh+excluded.import_wh, "
                       "export_wh=halfhourly.export_wh+excluded.export_wh, "
                       "import_cost=halfhourly.import_cost+excluded.import_cost, "
                       "export_credit=halfhourly.export_credit+excluded.export_credit, "
                       "longest_interval=CASE WHEN excluded.longest_interval>halfhourly.longest_interval "
                       "THEN excluded.longest_interval ELSE halfhourly.longest_interval END",
                       (meter.address, period, wh_in, wh_out, wh_in * price_in, wh_out * price_out, span))
        out.bills.append(meter)
        totals = []
        for hour, wh in spread_over_hours(start, ts, energy):
            total = db.execute("INSERT INTO hourly VALUES (?,?,?) ON CONFLICT(meter, hour_start) DO UPDATE "
                               "SET energy_wh=hourly.energy_wh+excluded.energy_wh RETURNING energy_wh",
                               (meter.address, hour, wh)).fetchone()[0]
            totals.append((hour, int(total)))
        for candidate in evaluate(self._trend(meter.address), meter.address, start, ts, energy, totals,
                                  self.limit_for(meter.address), self.rules, self.tz):
            a = candidate.alert
            added = db.execute(
                "INSERT INTO consumption_alerts (meter, kind, key, at, energy_wh, limit_wh, power_w, "
                "message) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING RETURNING id",
                (a.meter, a.kind, candidate.key, a.at, a.energy_wh, a.limit_wh, a.power_w, a.message)).fetchone()
            if added is not None:
                out.consumption_alerts.append((int(added[0]), a))

    def _issue(self, event: ChainEvent, block_time: int, out: Applied) -> None:
        args = event.args
        meter = self._meters.get(args["meter"].lower())
        if meter is None:
            return
        issued = Period(meter.address, int(args["periodId"]), int(args["periodStart"]), int(args["periodEnd"]),
                        int(args["importWh"]), int(args["importCost"]), int(args["standingCharge"]),
                        int(args["amountDue"]), "issued", block_time, event.tx_hash, int(args["exportWh"]),
                        int(args["exportCredit"]))
        self._write_period(issued)
        meter.period = Period(meter.address, issued.period_id + 1, issued.period_end, issued.period_end)
        self._write_period(meter.period)
        out.bills.append(meter)

    def _restart(self, event: ChainEvent, block_time: int, out: Applied) -> None:
        """A meter exchange or register reset: the final read (when it adds time), then the new meter or the
        restarted registers (the open period goes on, in the new meter's name after an exchange)."""
        args = event.args
        meter = self._meters.get(args["meter"].lower())
        if meter is None:
            log_event(log, "index_unknown_meter", logging.ERROR, meter=args["meter"], block=event.block)
            return
        exchange = event.name == "MeterExchanged"
        kind = "exchange" if exchange else "reset"
        final = unpack_record(int(args["finalRecord"]))
        before = (meter.last_energy_wh, meter.last_export_wh)
        if final["timestamp"] != meter.last_timestamp:
            self._read(meter, final, event, out, kind)
        new_meter = args["newMeter"] if exchange else None
        opening = (int(args["openingImportWh"]), int(args["openingExportWh"])) if exchange else (
            int(args["importWh"]), int(args["exportWh"]))
        self.db.execute(f"INSERT INTO restarts ({', '.join(_RESTART_KEYS)}) "  # noqa: S608 - fixed names
                        f"VALUES ({', '.join('?' * len(_RESTART_KEYS))}) ON CONFLICT DO NOTHING",
                        (event.block, event.log_index, meter.address, kind, new_meter, final["timestamp"],
                         final["seq"], final["energyWh"], final["exportWh"], final["energyWh"] - before[0],
                         final["exportWh"] - before[1], *opening, meter.period.period_id, event.tx_hash))
        if new_meter is None:
            meter.last_seq, (meter.last_energy_wh, meter.last_export_wh) = 0, opening
            self.db.execute("UPDATE meters SET last_seq=0, last_energy_wh=?, last_export_wh=? WHERE address=?",
                            (*opening, meter.address))
            self._trends.pop(meter.address, None)
            out.meters.append(meter)
            return
        ts = final["timestamp"]
        successor = MeterRecord(
            address=new_meter, account_ref=meter.account_ref, region=meter.region, opening_wh=opening[0],
            opened_at=ts, registered_at=block_time, active=True, status_changed_at=block_time, last_seq=0,
            last_timestamp=ts, last_energy_wh=opening[0], last_block=None, last_tx=None, rejected=0,
            period=dataclasses.replace(meter.period, meter=new_meter), last_export_wh=opening[1])
        self.db.execute(_UPSERT_METER, (*_meter_row(successor), opening[1], None))
        self._write_period(successor.period)
        self._meters[new_meter.lower()] = successor
        meter.active, meter.status_changed_at, meter.replaced_by = False, block_time, new_meter
        meter.period.status = "transferred"
        self._write_period(meter.period)
        self.db.execute("UPDATE meters SET active=0, status_changed_at=?, replaced_by=? WHERE address=?",
                        (block_time, new_meter, meter.address))
        out.meters += [meter, successor]
        out.bills.append(successor)

    def restarts(self, meter: str | None = None) -> list[dict[str, Any]]:
        """Meter exchanges and register resets (of ``meter``, as the old meter or the new one), oldest first."""
        where, params = ("WHERE lower(meter)=? OR lower(new_meter)=?", (meter.lower(), meter.lower())) if meter \
            else ("", ())
        rows = self.db.execute(f"SELECT {', '.join(_RESTART_KEYS)} FROM restarts {where} "  # noqa: S608
                               "ORDER BY block, log_index", params).fetchall()
        return [dict(zip(_RESTART_KEYS, r, strict=True)) for r in rows]

    def lineage(self, meter: str) -> list[str]:
        """``meter`` and the meters it replaced in exchanges, newest first (one account's meters)."""
        chain = [meter]
        while True:
            row = self.db.execute("SELECT meter FROM restarts WHERE kind='exchange' AND lower(new_meter)=?",
                                  (chain[-1].lower(),)).fetchone()
            if row is None or str(row[0]) in chain:
                return chain
            chain.append(str(row[0]))

    def _write_period(self, p: Period) -> None:
        self.db.execute(_UPSERT_PERIOD,
                        (p.meter, p.period_id, p.period_start, p.period_end, p.energy_wh, p.energy_cost,
                         p.standing_charge, p.amount_due, p.status, p.issued_at, p.issued_tx, p.export_wh,
                         p.export_credit))

    def _trend(self, meter: str) -> Trend:
        trend = self._trends.get(meter)
        if trend is None:
            rows = self.db.execute("SELECT energy_wh, timestamp - interval_start FROM readings WHERE meter=? "
                                   "ORDER BY timestamp DESC LIMIT ?", (meter, self.rules.window + 64)).fetchall()
            trend = Trend(deque(maxlen=self.rules.window))
            # The newest row is the reading being applied now (already inserted): leave it out. Replaying the
            # rule over the rows before also finds whether the meter was in a jump (no second alert for it).
            for wh, seconds in reversed(rows[1:]):
                trend.observe(trend.power(int(seconds), int(wh), self.rules.min_span), self.rules)
            self._trends[meter] = trend
        return trend

    # ---------------------------------------------------------------- thresholds

    def limit_for(self, meter: str) -> int:
        """The meter's hourly consumption limit in Wh (0: none)."""
        self.refresh()
        return self._limits.get(meter, self.default_limit_wh)

    def limit_is_default(self, meter: str) -> bool:
        """Whether the meter uses the default limit (nobody set its own)."""
        return meter not in self._limits

    def set_limit(self, meter: str, limit_wh: int | None, by: str) -> None:
        """Set a meter's hourly limit (0 turns alerts off; None goes back to the default)."""
        with self.db:
            if limit_wh is None:
                self.db.execute("DELETE FROM thresholds WHERE meter=?", (meter,))
                self._limits.pop(meter, None)
            else:
                self.db.execute(_UPSERT_THRESHOLD,
                                (meter, limit_wh, int(time.time()), by))
                self._limits[meter] = limit_wh

    # ---------------------------------------------------------------- reading

    def meter(self, address: str) -> MeterRecord | None:
        """One meter, by address in any case."""
        self.refresh()
        return self._meters.get(address.lower())

    def meters(self) -> list[MeterRecord]:
        """Every meter, in registration order."""
        self.refresh()
        return sorted(self._meters.values(), key=lambda m: (m.registered_at, m.address))

    def _query_meters(self, where: str, params: tuple[Any, ...]) -> list[MeterRecord]:
        rows = self.db.execute(f"SELECT {_METER_COLUMNS}, last_export_wh, replaced_by FROM meters {where}",
                               params).fetchall()
        out = []
        for row in rows:
            period_row = self.db.execute(
                f"SELECT {_PERIOD_COLUMNS} FROM periods WHERE meter=? ORDER BY period_id DESC LIMIT 1", (row[0],)
            ).fetchone()
            values: list[Any] = [*row[:6], bool(row[6]), *row[7:14], Period(*period_row), row[14], row[15]]
            out.append(MeterRecord(*values))
        return out

    def readings(self, meter: str, first: int, after: int, descending: bool, limit: int, offset: int
                 ) -> tuple[int, list[dict[str, Any]]]:
        """Readings of ``meter`` with a share in the hours [first, after) (whole hours, as ``window_hours``
        gives): (how many in all, one page), each with ``energy_in_window_wh``, its share in those hours."""
        # A reading's hours run from its interval's start to the hour holding its end (the hour
        # of its end alone when the interval is empty), as spread_over_hours lays them out. As a
        # meter's readings follow one another, those starting before `after` end at the latest
        # with the first reading at or after it: that bounds the scan of the time index.
        where = ("WHERE meter=:meter AND timestamp>=:first AND timestamp<=COALESCE((SELECT MIN(timestamp) FROM "
                 "readings WHERE meter=:meter AND timestamp>=:after), :after) AND ("
                 "(timestamp>interval_start AND timestamp>:first AND interval_start<:after) OR "
                 "(timestamp<=interval_start AND timestamp<:after))")
        params = {"meter": meter, "first": first, "after": after}
        count = self.db.execute(f"SELECT COUNT(*) FROM readings {where}", params).fetchone()[0]
        keys = ("seq", "timestamp", "register_wh", "energy_wh", "interval_start", "period_id", "block", "log_index",
                "tx_hash", "export_register_wh", "export_wh", "import_cost", "export_credit", "source")
        rows = self.db.execute(
            f"SELECT {', '.join(keys)} "
            f"FROM readings {where} ORDER BY timestamp {'DESC' if descending else 'ASC'} LIMIT :limit OFFSET :offset",
            {**params, "limit": limit, "offset": offset}).fetchall()
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        for r in out:
            r["energy_in_window_wh"] = energy_in_hours(r["interval_start"], r["timestamp"], r["energy_wh"], first,
                                                       after)
        return int(count), out

    def hours(self, meter: str, start: int, end: int) -> list[tuple[int, int]]:
        """(hour start, Wh) of ``meter`` for hours beginning in [start, end), in time order."""
        rows = self.db.execute("SELECT hour_start, energy_wh FROM hourly WHERE meter=? AND hour_start>=? "
                               "AND hour_start<? ORDER BY hour_start", (meter, start, end)).fetchall()
        return [(int(h), int(w)) for h, w in rows]

    def periods(self, meter: str | None, status: str | None, start: int, end: int, min_amount: int | None,
                descending: bool, limit: int, offset: int) -> tuple[int, list[Period]]:
        """Billing periods overlapping [start, end), optionally of one meter and status and of at least
        ``min_amount`` due (None: any, bills in credit included)."""
        where = ["period_start<?", "period_end>=?"]
        params: list[Any] = [end, start]
        if min_amount is not None:
            where.append("amount_due>=?")
            params.append(min_amount)
        if meter:
            where.append("meter=?")
            params.append(meter)
        if status:
            where.append("status=?")
            params.append(status)
        clause = " AND ".join(where)
        count = self.db.execute(f"SELECT COUNT(*) FROM periods WHERE {clause}", params).fetchone()[0]
        order = "DESC" if descending else "ASC"
        rows = self.db.execute(f"SELECT {_PERIOD_COLUMNS} FROM periods WHERE {clause} "
                               f"ORDER BY period_start {order}, meter LIMIT ? OFFSET ?",
                               (*params, limit, offset)).fetchall()
        return int(count), [Period(*r) for r in rows]

    def period(self, meter: str, period_id: int) -> Period | None:
        """One billing period of ``meter`` (open or issued), by number."""
        row = self.db.execute(f"SELECT {_PERIOD_COLUMNS} FROM periods WHERE meter=? AND period_id=?",
                              (meter, period_id)).fetchone()
        return Period(*row) if row else None

    def period_readings(self, meter: str, period_id: int) -> list[tuple[RecordedReading, int, int]]:
        """The readings and final reads of one billing period in time order (of the meters it replaced in exchanges
        too: the period went on with it), each with its import and export energy since the reading before (so the
        first gives the registers at the period's start)."""
        meters = self.lineage(meter)
        rows = self.db.execute("SELECT seq, timestamp, register_wh, export_register_wh, block, tx_hash, energy_wh, "
                               f"export_wh, source FROM readings WHERE meter IN ({', '.join('?' * len(meters))}) "
                               "AND period_id=? ORDER BY timestamp", (*meters, period_id)).fetchall()
        return [(RecordedReading(int(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), str(r[5]), str(r[8])),
                 int(r[6]), int(r[7])) for r in rows]

    def period_restarts(self, meter: str, period_id: int) -> list[MeterRestart]:
        """The meter exchanges and register resets in one billing period of ``meter`` (and of the meters it
        replaced), in time order."""
        meters = self.lineage(meter)
        rows = self.db.execute(f"SELECT {', '.join(_RESTART_KEYS)} FROM restarts WHERE meter IN "  # noqa: S608
                               f"({', '.join('?' * len(meters))}) AND period_id=? ORDER BY block, log_index",
                               (*meters, period_id)).fetchall()
        out = [dict(zip(_RESTART_KEYS, r, strict=True)) for r in rows]
        return [MeterRestart(str(r["kind"]), int(r["at"]), str(r["new_meter"] or r["meter"]),
                             int(r["opening_import_wh"]), int(r["opening_export_wh"]), int(r["block"]),
                             str(r["tx_hash"])) for r in out]

    def tariffs(self) -> list[dict[str, Any]]:
        """Every tariff version ever set, newest first."""
        rows = self.db.execute("SELECT version, spec, block, tx_hash FROM tariffs ORDER BY version DESC").fetchall()
        return [tariff_row(int(v), _version_from_spec(spec), int(b), tx) for v, spec, b, tx in rows]

    def half_hours(self, meter: str, first: int, last: int) -> dict[int, tuple[int, int, int, int, int]]:
        """Settlement periods ``first`` .. ``last`` of ``meter`` that readings cover, by period:
        (import Wh, export Wh, import cost, export credit, the longest reading interval over it)."""
        rows = self.db.execute("SELECT period, import_wh, export_wh, import_cost, export_credit, longest_interval "
                               "FROM halfhourly WHERE meter=? AND period>=? AND period<=?", (meter, first, last))
        return {int(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows}

    def grid_alerts(self, active: bool | None, region: str | None, now: int, limit: int, offset: int
                    ) -> tuple[int, list[dict[str, Any]]]:
        """Grid alerts, newest first; ``active`` picks those in force at ``now`` (or the others)."""
        where: list[str] = ["1=1"]
        params: list[Any] = []
        in_force = "(cleared_at IS NULL AND expires_at>?)"
        if active is True:
            where.append(in_force)
            params.append(now)
        elif active is False:
            where.append(f"NOT {in_force}")
            params.append(now)
        if region is not None:
            where.append("(region='' OR region=?)")
            params.append(region)
        clause = " AND ".join(where)
        count = self.db.execute(f"SELECT COUNT(*) FROM grid_alerts WHERE {clause}", params).fetchone()[0]
        rows = self.db.execute(f"SELECT id, severity, kind, region, message, expires_at, raised_at, raised_tx, "
                               f"cleared_at FROM grid_alerts WHERE {clause} ORDER BY id DESC LIMIT ? OFFSET ?",
                               (*params, limit, offset)).fetchall()
        return int(count), [dict(zip(_ALERT_KEYS, r, strict=True)) for r in rows]

    def grid_alert(self, alert_id: int) -> dict[str, Any] | None:
        """One grid alert by id."""
        row = self.db.execute("SELECT id, severity, kind, region, message, expires_at, raised_at, raised_tx, "
                              "cleared_at FROM grid_alerts WHERE id=?", (alert_id,)).fetchone()
        return dict(zip(_ALERT_KEYS, row, strict=True)) if row else None

    def consumption_alerts(self, meter: str | None, start: int, end: int, limit: int, offset: int
                           ) -> tuple[int, list[dict[str, Any]]]:
        """Consumption alerts raised in [start, end), newest first."""
        where, params = "at>=? AND at<?", [start, end]
        if meter:
            where += " AND meter=?"
            params.append(meter)  # type: ignore[arg-type]
        count = self.db.execute(f"SELECT COUNT(*) FROM consumption_alerts WHERE {where}", params).fetchone()[0]
        rows = self.db.execute(f"SELECT id, meter, kind, at, energy_wh, limit_wh, power_w, message FROM "
                               f"consumption_alerts WHERE {where} ORDER BY at DESC, id DESC LIMIT ? OFFSET ?",
                               (*params, limit, offset)).fetchall()
        keys = ("id", "meter", "kind", "at", "energy_wh", "limit_wh", "power_w", "message")
        return int(count), [dict(zip(keys, r, strict=True)) for r in rows]


def _meter_row(m: MeterRecord) -> tuple[Any, ...]:
    return (m.address, m.account_ref, m.region, m.opening_wh, m.opened_at, m.registered_at, int(m.active),
            m.status_changed_at, m.last_seq, m.last_timestamp, m.last_energy_wh, m.last_block, m.last_tx, m.rejected)


def _spec(version: TariffVersion) -> dict[str, Any]:
    """A version as JSON (the contract's struct, field by field)."""
    return {"struct": list(version.as_struct())}


def _version_from_spec(text: str) -> TariffVersion:
    return TariffVersion.from_struct(json.loads(text)["struct"])


def tariff_row(number: int, version: TariffVersion, block: int, tx_hash: str) -> dict[str, Any]:
    """A tariff version as the API and the live feed show it."""
    def rule(r: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": {0: "flat", 1: "banded", 2: "day_ahead"}[r.kind], "rate": r.rate}
        if r.kind == 1:
            out["bands"] = list(r.bands)
            out["band_rates"] = list(r.band_rates)
        return out

    return {"version": number, "effective_from": version.effective_from, "standing_charge": version.standing_charge,
            "unit_rate": version.import_rule.rate, "clock": "gmt" if version.clock == 0 else "local",
            "import": rule(version.import_rule), "export": rule(version.export_rule), "block": block,
            "tx_hash": tx_hash}
