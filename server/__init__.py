"""The server: TLS WebSocket gateway for meters, batcher to the chain, relay of contract events.

Modules: ``tls`` (private CA and certificates), ``validation`` and ``session`` (the protocol
core: pure, no I/O), ``store`` (durable SQLite queue, cursors, relay position), ``batcher``
(submits queued readings), ``relay`` (contract events back to meters), ``gateway`` (the
WebSocket endpoint), ``app`` (assembles and runs them in one asyncio process).
"""
