"""The index's database connection: SQLite (the embedded default) or PostgreSQL (``INDEX_URL``).

``server.indexing.index`` writes one dialect of SQL that both engines accept (``?`` and ``:name``
placeholders, ``INSERT ... ON CONFLICT``, ``RETURNING``); this thin adapter turns the
placeholders into psycopg's for PostgreSQL and gives both engines the same few operations:
``execute``, ``executemany``, a transaction as ``with db:`` (an explicit ``BEGIN`` inside it
makes the block one transaction, as with ``sqlite3``), the tables and a table's columns and
primary key.

PostgreSQL runs in autocommit: a statement outside an explicit transaction commits at once,
so an API process reading the index sees what the indexer committed, and keeps no snapshot open.
Its schema is made by the Alembic migrations in ``server/indexing/index_migrations`` (run at open, under an
advisory lock so that several processes starting together migrate once); SQLite keeps its DDL in
``server.indexing.index`` with the ``LAYOUT`` version (an embedded cache, emptied and rebuilt when it changes).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from common.logs import log_event

__all__ = ["IndexDb", "SqliteDb", "PostgresDb", "DATABASE_ERRORS", "describe_url", "to_psycopg",
           "MIGRATIONS", "migrate"]

#: Where the PostgreSQL index's Alembic migrations live.
MIGRATIONS = Path(__file__).resolve().parent / "index_migrations"
#: Errors that mean the index's database cannot be used (opened, read or written).
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.DatabaseError, psycopg.Error)
#: The advisory lock key PostgreSQL index migrations hold (any constant; "smidx" in ASCII).
_MIGRATION_LOCK = 0x736D696478


def describe_url(url: str) -> str:
    """A PostgreSQL URL without its password, for messages and logs."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unreadable INDEX_URL)"
    host, port, name = parts.get("host", ""), parts.get("port", ""), parts.get("dbname", "")
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"postgresql://{user}{host}{':' + str(port) if port else ''}/{name}"


class Rows(Protocol):
    """What a statement's result offers (``sqlite3.Cursor`` and ``psycopg.Cursor`` both do)."""

    @property
    def rowcount(self) -> int:
        """How many rows the statement changed."""

    def fetchone(self) -> Any:
        """The next row, or None."""

    def fetchall(self) -> list[Any]:
        """The remaining rows."""

    def __iter__(self) -> Any:
        """The remaining rows, one by one."""


class IndexDb(Protocol):
    """The operations the index uses, on either engine."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Rows:
        """Run one statement."""

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters."""

    def tables(self) -> set[str]:
        """The names of the tables in the database."""

    def shape(self, table: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A table's columns in order, and its primary key's columns in order."""

    def close(self) -> None:
        """Close the connection."""

    def __enter__(self) -> IndexDb:
        """Start a block that commits when it ends without an error and rolls back otherwise."""

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        """End the block: commit, or roll back on an error."""


class SqliteDb:
    """The index in a SQLite file, in WAL mode, statements autocommitting outside ``BEGIN``."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        """Open (or create) the file."""
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        # A REPLACE deletes the row it replaces; only with recursive triggers does that deletion reach the journal.
        self.conn.execute("PRAGMA recursive_triggers=ON")

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Rows:
        """Run one statement."""
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters."""
        self.conn.executemany(sql, rows)

    def executescript(self, script: str) -> None:
        """Run several statements (the schema)."""
        self.conn.executescript(script)

    def tables(self) -> set[str]:
        """The names of the tables in the database."""
        return {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def shape(self, table: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A table's columns in order, and its primary key's columns in order."""
        info = self.conn.execute(f"PRAGMA table_info({table})").fetchall()  # (cid, name, type, notnull, default, pk)
        columns = tuple(row[1] for row in info)
        key = tuple(row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        return columns, key

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> SqliteDb:
        """Start a block that commits when it ends without an error and rolls back otherwise."""
        self.conn.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        """End the block: commit, or roll back on an error."""
        self.conn.__exit__(kind, err, tb)


_PLACEHOLDER = re.compile(r"'[^']*'|%|\?|(?<!:):([A-Za-z_]\w*)")


def to_psycopg(sql: str) -> str:
    """``?`` and ``:name`` placeholders as psycopg's ``%s`` and ``%(name)s`` (quoted text left alone)."""
    def swap(m: re.Match[str]) -> str:
        text = m.group(0)
        if text.startswith("'"):
            return text.replace("%", "%%")
        if text == "%":
            return "%%"
        if text == "?":
            return "%s"
        return f"%({m.group(1)})s"

    return _PLACEHOLDER.sub(swap, sql)


class PostgresDb:
    """The index in a PostgreSQL database, through psycopg 3 in autocommit mode."""

    dialect = "postgresql"

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        """Connect, and bring the schema to the newest migration."""
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(connect_timeout)))
        self._sql: dict[str, bytes] = {}
        self._depth = 0
        try:
            migrate(self.conn)
        except BaseException:
            self.conn.close()
            raise

    def _translate(self, sql: str) -> bytes:
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = to_psycopg(sql).encode()
        return out

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Rows:
        """Run one statement."""
        if not params:  # without parameters psycopg sends the text as it is: no placeholders, no %% escapes
            return self.conn.execute(sql.encode())
        return self.conn.execute(self._translate(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each row of parameters."""
        with self.conn.cursor() as cursor:
            cursor.executemany(self._translate(sql), rows)

    def tables(self) -> set[str]:
        """The names of the tables in the database (its current schema)."""
        rows = self.conn.execute("SELECT table_name FROM information_schema.tables "
                                 "WHERE table_schema = current_schema()").fetchall()
        return {str(r[0]) for r in rows}

    def shape(self, table: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """A table's columns in order, and its primary key's columns in order."""
        columns = self.conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s ORDER BY ordinal_position", (table,)).fetchall()
        key = self.conn.execute(
            "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON TRUE "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY k.n", (table,)).fetchall()
        return tuple(str(r[0]) for r in columns), tuple(str(r[0]) for r in key)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def __enter__(self) -> PostgresDb:
        """Start a block; an explicit ``BEGIN`` in it makes it one transaction."""
        self._depth += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        """End the block: commit the transaction it began, or roll it back on an error."""
        self._depth -= 1
        if self._depth or self.conn.closed:
            return
        if self.conn.info.transaction_status != pq.TransactionStatus.IDLE:
            self.conn.execute("ROLLBACK" if kind is not None else "COMMIT")


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Bring the index's schema in ``conn``'s database to the newest Alembic migration."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine
    from sqlalchemy.pool import StaticPool

    # SQLAlchemy gets its own connection (Alembic's transaction must not be our autocommit one).
    info = conn.info
    engine = create_engine("postgresql+psycopg://", poolclass=StaticPool,
                           creator=lambda: psycopg.connect(info.dsn, password=info.password or None))
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            before = _revision(connection)
            command.upgrade(config, "head")
            after = _revision(connection)
        if before != after:
            log_event(logging.getLogger("index"), "index_migrated", was=before or "none", now=after or "none",
                      database=describe_url(info.dsn))
    finally:
        engine.dispose()


def _revision(connection: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    revision = MigrationContext.configure(connection).get_current_revision()
    return str(revision) if revision else None
