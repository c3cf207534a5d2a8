"""The reading log and the meter bus: embedded (SQLite, in process) or NATS JetStream."""
