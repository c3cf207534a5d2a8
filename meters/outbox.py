"""The meter's on-disk outbox and register state (SQLite).

Every reading is signed and written here before it is sent, and stays until its ``bill``
arrives or the server rejects it for good; after a reconnect the meter resends whatever the
server's ``welcome`` shows missing. The register's last value and the next sequence number
persist too, so a restarted meter carries on where it stopped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.eip712 import ReadingData

__all__ = ["Outbox", "OutboxEntry", "MeterPosition"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    energy_wh INTEGER NOT NULL,
    signature TEXT NOT NULL,
    export_wh INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS position (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_seq INTEGER NOT NULL,
    last_timestamp INTEGER NOT NULL,
    last_energy_wh INTEGER NOT NULL,
    last_export_wh INTEGER NOT NULL DEFAULT 0
);
"""
#: Version 2 added the export register; readings signed before it carry no ``exportWh``.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class OutboxEntry:
    """A signed reading waiting for its bill."""

    seq: int
    timestamp: int
    energy_wh: int
    signature: str
    export_wh: int = 0


@dataclass(frozen=True)
class MeterPosition:
    """The meter's own last reading: the sequence number, time and registers it reached."""

    last_seq: int
    last_timestamp: int
    last_energy_wh: int
    last_export_wh: int = 0


class Outbox:
    """One meter's outbox; ``add`` commits before the reading is sent."""

    def __init__(self, path: Path, meter: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.meter = meter
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        #: Readings written by version 1 were signed without ``exportWh``: ``resign`` signs them again.
        self.needs_resign = version < SCHEMA_VERSION and "outbox" in tables
        if self.needs_resign:
            with self.db:
                self.db.execute("BEGIN")
                self.db.execute("ALTER TABLE outbox ADD COLUMN export_wh INTEGER NOT NULL DEFAULT 0")
                self.db.execute("ALTER TABLE position ADD COLUMN last_export_wh INTEGER NOT NULL DEFAULT 0")
        self.db.executescript(_SCHEMA)
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def position(self) -> MeterPosition | None:
        """Where the meter's register and sequence stand, if known."""
        row = self.db.execute(
            "SELECT last_seq, last_timestamp, last_energy_wh, last_export_wh FROM position").fetchone()
        return MeterPosition(*row) if row else None

    def set_position(self, pos: MeterPosition) -> None:
        """Record the meter's position (provisioning, or adopting the chain's after data loss)."""
        self.db.execute(
            "INSERT INTO position (id, last_seq, last_timestamp, last_energy_wh, last_export_wh) "
            "VALUES (1, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET last_seq=excluded.last_seq, last_timestamp=excluded.last_timestamp, "
            "last_energy_wh=excluded.last_energy_wh, last_export_wh=excluded.last_export_wh",
            (pos.last_seq, pos.last_timestamp, pos.last_energy_wh, pos.last_export_wh),
        )

    def add(self, data: ReadingData, signature: str) -> None:
        """Store a signed reading and advance the position, in one transaction."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO outbox (seq, timestamp, energy_wh, export_wh, signature) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (data.seq, data.timestamp, data.energy_wh, data.export_wh, signature))
            self.set_position(MeterPosition(data.seq, data.timestamp, data.energy_wh, data.export_wh))

    def pending(self) -> list[OutboxEntry]:
        """Readings still waiting, oldest first."""
        rows = self.db.execute(
            "SELECT seq, timestamp, energy_wh, signature, export_wh FROM outbox ORDER BY seq").fetchall()
        return [OutboxEntry(*r) for r in rows]

    def done(self, seq: int) -> bool:
        """Forget a reading whose bill arrived or that was rejected for good."""
        return self.db.execute("DELETE FROM outbox WHERE seq=?", (seq,)).rowcount > 0

    def done_upto(self, seq: int) -> int:
        """Forget every reading up to ``seq`` (the chain has decided them)."""
        return int(self.db.execute("DELETE FROM outbox WHERE seq<=?", (seq,)).rowcount)

    def clear(self) -> None:
        """Drop everything (re-provisioning after a chain reset)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM outbox")
            self.db.execute("DELETE FROM position")

    def count(self) -> int:
        """How many readings wait."""
        return int(self.db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def reading(self, entry: OutboxEntry) -> ReadingData:
        """The signed fields of an entry."""
        return ReadingData(self.meter, entry.seq, entry.timestamp, entry.energy_wh, entry.export_wh)

    def resign(self, sign: Callable[[ReadingData], str]) -> int:
        """Sign every waiting reading again (with its export register) after an upgrade from version 1,
        so that nothing the meter took before is lost; returns how many."""
        entries = self.pending()
        with self.db:
            self.db.execute("BEGIN")
            for entry in entries:
                self.db.execute("UPDATE outbox SET signature=? WHERE seq=?", (sign(self.reading(entry)), entry.seq))
        self.needs_resign = False
        return len(entries)
