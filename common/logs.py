"""Structured log lines: ``ts=... level=info event=reading_rejected meter=0xab.. seq=17``.

Every long-running process calls ``setup_logging`` once and logs through ``log_event``, so
each line is greppable by ``event=`` and machine-parseable as key=value pairs.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["setup_logging", "log_event", "format_fields", "parse_line"]


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def format_fields(fields: dict[str, Any]) -> str:
    """Render key=value pairs, quoting values with spaces."""
    return " ".join(f"{k}={_quote(v)}" for k, v in fields.items() if v is not None)


class _KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        extra = getattr(record, "fields", None)
        if extra:
            fields.update(extra)
        else:
            fields["msg"] = record.getMessage()
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        return format_fields(fields)


def setup_logging(level: str = "INFO", stream: TextIO | None = None, path: str | None = None) -> None:
    """Send structured lines to ``stream`` (default stderr) and optionally a file."""
    root = logging.getLogger()
    root.handlers.clear()
    handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_KeyValueFormatter())
    root.addHandler(handler)
    if path:
        file_handler = logging.FileHandler(path)
        file_handler.setFormatter(_KeyValueFormatter())
        root.addHandler(file_handler)
    root.setLevel(level.upper())
    for noisy in ("websockets", "web3", "urllib3", "asyncio", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event line."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": {"event": event, **fields}})


def parse_line(line: str) -> dict[str, str]:
    """Parse one structured line back into a dict (for tests and tools)."""
    out: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        eq = line.find("=", i)
        if eq < 0:
            break
        key = line[i:eq]
        i = eq + 1
        if i < n and line[i] == '"':
            i += 1
            buf = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n:
                    i += 1
                    buf.append("\n" if line[i] == "n" else line[i])
                else:
                    buf.append(line[i])
                i += 1
            i += 1
            out[key] = "".join(buf)
        else:
            end = line.find(" ", i)
            end = n if end < 0 else end
            out[key] = line[i:end]
            i = end
    return out
