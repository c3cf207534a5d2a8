"""The control link between the main process and its gateway workers (``GATEWAY_WORKERS``): one
JSON object a line over a loopback TCP connection the worker opens, starting with the worker's
secret token. No I/O here: the framing and the operations, which ``server.workers`` (main) and
``server.worker`` (each worker) share.

Worker -> main: ``hello`` (token, worker number, pid), ``listening``, ``failed`` (why it could
not start), ``login`` (a meter logged in: id, meter, region, protocol version), ``logout``,
``opt_out`` (a meter's opt-out on the wire), ``queued`` (readings committed to the shared queue).

Main -> worker: ``login_ok`` (id, tariff, final block, the messages that follow ``welcome``),
``login_failed`` (id, code, message), ``send`` (a message for a meter), ``close`` (close a
meter's connection), ``state`` (the queue's size and the final block), ``stop``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["frame", "unframe", "LINE_LIMIT", "WORKER_OPS", "MAIN_OPS"]

#: The longest line either side accepts (a ``login_ok`` with many alerts and events is the longest).
LINE_LIMIT = 1 << 20
WORKER_OPS = frozenset({"hello", "listening", "failed", "login", "logout", "opt_out", "queued"})
MAIN_OPS = frozenset({"login_ok", "login_failed", "send", "close", "state", "stop", "restart"})


def frame(op: str, **fields: Any) -> bytes:
    """One operation as a line."""
    return json.dumps({"op": op, **fields}, separators=(",", ":")).encode() + b"\n"


def unframe(line: bytes, ops: frozenset[str]) -> dict[str, Any]:
    """Parse one line; raises ``ValueError`` for anything but a JSON object with a known ``op``."""
    data = json.loads(line)
    if not isinstance(data, dict) or data.get("op") not in ops:
        raise ValueError(f"not a control operation: {line[:80]!r}")
    return data
