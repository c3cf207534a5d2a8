"""The chain writer: the queue of readings (SQLite) and the batcher that submits them."""
