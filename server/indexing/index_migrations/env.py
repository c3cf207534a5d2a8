"""Alembic's environment for the PostgreSQL index: runs on the connection ``server.indexing.index_db.migrate`` gives."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
