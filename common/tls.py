"""The meters' side of TLS: a client context that trusts only the project's private CA.

The server makes the CA and its own certificate (``server.endpoint.tls``); meters and tools read the
CA's certificate (``DATA_DIR/tls/ca.pem``). Nothing anywhere disables certificate verification.
"""

from __future__ import annotations

import ssl
from pathlib import Path

__all__ = ["client_context"]


def client_context(ca_cert: Path) -> ssl.SSLContext:
    """A TLS context (1.2 or newer) that trusts only ``ca_cert`` and verifies host names."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
