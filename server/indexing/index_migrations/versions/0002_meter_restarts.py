"""Meter exchanges and register resets (SQLite's layout 3): a reading is keyed by its meter and time (a register
reset restarts the sequence), carries where it came from (``source``: a signed reading, or the final read of an
exchange or reset), a meter names the one that took it over (``replaced_by``), and ``restarts`` holds the
``MeterExchanged`` and ``RegisterReset`` events, journaled like the other derived tables.

The tables derived from the chain are emptied (as SQLite's layout change drops them): the index is a cache of
the chain and is rebuilt from it at the next start; ``thresholds`` (the operators' and customers' limits) stays.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: Every table derived from the chain (``server.indexing.index.DERIVED_TABLES`` before this revision).
_DERIVED = ("meters", "readings", "rejections", "hourly", "halfhourly", "periods", "tariffs", "day_ahead",
            "clock_changes", "grid_alerts", "consumption_alerts", "position", "journal", "blocks")

_UPGRADE = (
    "ALTER TABLE meters ADD COLUMN replaced_by TEXT",
    "ALTER TABLE readings ADD COLUMN source TEXT NOT NULL DEFAULT 'meter'",
    "ALTER TABLE readings DROP CONSTRAINT readings_pkey",
    "ALTER TABLE readings ADD PRIMARY KEY (meter, timestamp)",
    "DROP TRIGGER journal_readings ON readings",
    "CREATE TRIGGER journal_readings AFTER INSERT OR UPDATE OR DELETE ON readings FOR EACH ROW "
    "EXECUTE FUNCTION journal_change('meter', 'timestamp')",
    """CREATE TABLE restarts (
    block BIGINT NOT NULL, log_index BIGINT NOT NULL, meter TEXT NOT NULL, kind TEXT NOT NULL, new_meter TEXT,
    at BIGINT NOT NULL, last_seq BIGINT NOT NULL, final_import_wh BIGINT NOT NULL,
    final_export_wh BIGINT NOT NULL, import_wh BIGINT NOT NULL, export_wh BIGINT NOT NULL,
    opening_import_wh BIGINT NOT NULL, opening_export_wh BIGINT NOT NULL, period_id BIGINT NOT NULL,
    tx_hash TEXT NOT NULL, PRIMARY KEY (block, log_index)
)""",
    "CREATE INDEX restarts_by_meter ON restarts (meter)",
    "CREATE TRIGGER journal_restarts AFTER INSERT OR UPDATE OR DELETE ON restarts FOR EACH ROW "
    "EXECUTE FUNCTION journal_change('block', 'log_index')",
)


def _run(statement: str) -> None:
    """One statement, as written (the driver's own execute: no parsing of colons or percent signs)."""
    op.get_bind().exec_driver_sql(statement)


def _empty() -> None:
    _run("UPDATE journal_block SET block=NULL")
    for table in _DERIVED:
        _run(f"DELETE FROM {table}")
    _run("DELETE FROM meta WHERE name='final'")


def upgrade() -> None:
    """Empty the derived tables, then change readings and meters and add restarts."""
    _empty()
    for statement in _UPGRADE:
        _run(statement)


def downgrade() -> None:
    """Back to revision 0001's tables (emptied: the index is rebuilt from the chain)."""
    _empty()
    _run("DROP TABLE restarts")
    _run("DROP TRIGGER journal_readings ON readings")
    _run("ALTER TABLE readings DROP CONSTRAINT readings_pkey")
    _run("ALTER TABLE readings ADD PRIMARY KEY (meter, seq)")
    _run("ALTER TABLE readings DROP COLUMN source")
    _run("ALTER TABLE meters DROP COLUMN replaced_by")
    _run("CREATE TRIGGER journal_readings AFTER INSERT OR UPDATE OR DELETE ON readings FOR EACH ROW "
         "EXECUTE FUNCTION journal_change('meter', 'seq')")
