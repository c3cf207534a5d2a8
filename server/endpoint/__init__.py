"""The meters' endpoint: TLS WebSocket, login, the off-chain checks, and the gateway processes."""
