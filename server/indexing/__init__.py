"""The API's index: contract events into SQLite or PostgreSQL, hourly totals, consumption alerts."""
