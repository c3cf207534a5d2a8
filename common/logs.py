"""Structured log lines: ``ts=... level=info event=reading_rejected meter=0xab.. seq=17``.

Every long-running process calls ``setup_logging`` once and logs through ``log_event``, so
each line is greppable by ``event=`` and machine-parseable as key=value pairs.

A line is one line whatever it carries: every character that is not printable (C0 and C1
controls, DEL, line and paragraph separators, format characters such as bidi overrides,
lone surrogates) is written as an escape (``\\r``, ``\\x1b``, ``\\u2028``) in keys and
values alike, so text a peer sent can never start a forged line or rewrite a terminal.
``parse_line`` reads back exactly what was logged. Text a peer supplied is also cut to
``UNTRUSTED_LIMIT`` characters with ``clip`` before it is logged or echoed.

No line carries a credential: every handler ``setup_logging`` installs has the ``RedactSecrets``
filter, which replaces the value of a secret query parameter (``?key=``, ``&token=``, ...), a
bearer token, an ``X-API-Key`` header and a URL's password with ``[redacted]`` in any record, a
third party's (uvicorn's access and error lines) included. Where a refused credential must be
told apart from another, ``fingerprint`` names it without revealing it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
from typing import Any, TextIO

__all__ = ["setup_logging", "log_event", "format_fields", "parse_line", "escape", "clip", "UNTRUSTED_LIMIT",
           "RedactSecrets", "redact", "fingerprint", "SECRET_NAMES", "REDACTED"]

#: Characters of peer-supplied text kept in a log line or an error message; the rest is cut.
UNTRUSTED_LIMIT = 200
#: The marker ``clip`` ends a cut text with.
_CLIPPED = re.compile(r"\.\.\.\[\d+ more characters\]\Z")

_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_SHORT_UNESCAPES = {"n": "\n", "r": "\r", "t": "\t"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def _escape_char(c: str) -> str:
    short = _SHORT_ESCAPES.get(c)
    if short is not None:
        return short
    if c.isprintable():
        return c
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape(text: str) -> str:
    """``text`` with backslash, double quote and every unprintable character written as an escape."""
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text
    return "".join(map(_escape_char, text))


def clip(value: Any, limit: int = UNTRUSTED_LIMIT) -> str:
    """``value`` as text of at most ``limit`` characters, with a marker saying how much was cut.

    Text clipped before (at most ``limit`` characters and a marker) is returned as it is, so clipping twice
    says the first cut rather than cutting the marker."""
    text = str(value)
    if len(text) <= limit:
        return text
    marked = _CLIPPED.search(text)
    if marked is not None and marked.start() <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


#: Names of parameters and fields whose value is a secret, whatever case or separator they are written in.
SECRET_NAMES = ("key", "token", "api_key", "apikey", "x_api_key", "access_token", "refresh_token", "auth",
                "authorization", "secret", "password", "passwd", "pwd", "credential", "credentials")
#: What a secret is replaced with.
REDACTED = "[redacted]"
_NAMES = "|".join(sorted((re.escape(n).replace("_", "[_-]?") for n in SECRET_NAMES), key=len, reverse=True))
#: ``?key=...``, ``&token=...``, ``#key=...`` (a dashboard link) and the like, up to the next separator.
_QUERY_SECRET = re.compile(rf"(?i)([?&;#](?:{_NAMES})=)[^&#;\s\"'\\]+")
#: ``Bearer <token>`` (an Authorization header's value, wherever it was written); a token holds a digit, so that
#: prose ("a bearer token") is left alone.
_BEARER = re.compile(r"(?i)(\bbearer\s+)(?=[A-Za-z._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]+")
#: ``X-API-Key: <key>``, ``x-api-key=<key>`` and a header pair's repr, ``(b'x-api-key', b'<key>')``.
_API_KEY_HEADER = re.compile(r"""(?i)(x-api-key(?:['"]?\s*[:=]\s*|['"],\s*)b?['"]?)[^\s'",;)}]+""")
#: The password of a URL's user information: ``postgresql://user:<password>@host``.
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+(@)")
_REDACTIONS = ((_QUERY_SECRET, rf"\1{REDACTED}"), (_BEARER, rf"\1{REDACTED}"),
               (_API_KEY_HEADER, rf"\1{REDACTED}"), (_URL_PASSWORD, rf"\1{REDACTED}\2"))


def redact(text: str) -> str:
    """``text`` with every secret parameter, bearer token, API-key header and URL password replaced by ``REDACTED``."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def fingerprint(secret: str) -> str:
    """A short name for a secret that does not reveal it (the first 8 hex digits of its SHA-256), so that two
    refused keys can be told apart in a message or a log line."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _redact_field(name: Any, value: Any) -> Any:
    """A structured field's value without credentials: all of it under a secret's name, else what ``redact``
    finds in its text (the value itself, of its own type, when there is nothing to redact)."""
    if value is None:
        return value
    if str(name).lower().replace("-", "_") in SECRET_NAMES:
        return REDACTED
    if isinstance(value, (int, float)):
        return value
    text = str(value)
    clean = redact(text)
    return value if clean == text else clean


class RedactSecrets(logging.Filter):
    """Takes every credential out of a record before any handler writes it (``redact``): its message,
    its structured fields (a field named like a secret loses its whole value), its traceback and
    stack. Never drops a record."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always keeps it."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record whose arguments do not fit: the handler reports it
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {k: _redact_field(k, v) for k, v in fields.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _quote(value: Any) -> str:
    text = str(value)
    if text and text.isprintable() and " " not in text and '"' not in text and "=" not in text:
        return text  # printable with no separator: written as it is (a backslash included)
    return '"' + escape(text) + '"'


def format_fields(fields: dict[str, Any]) -> str:
    """Render key=value pairs, quoting (and escaping) keys and values that are not plain words."""
    return " ".join(f"{_quote(k)}={_quote(v)}" for k, v in fields.items() if v is not None)


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
            fields["exc"] = (record.exc_text or self.formatException(record.exc_info)).splitlines()[-1]
        return format_fields(fields)


def setup_logging(level: str = "INFO", stream: TextIO | None = None, path: str | None = None) -> None:
    """Send structured lines, credentials redacted (``RedactSecrets``), to ``stream`` (default stderr) and
    optionally a file."""
    root = logging.getLogger()
    root.handlers.clear()
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if path:
        handlers.append(logging.FileHandler(path))
    for handler in handlers:
        handler.setFormatter(_KeyValueFormatter())
        handler.addFilter(RedactSecrets())
        root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("websockets", "web3", "urllib3", "asyncio", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event line."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": {"event": event, **fields}})


def _read_quoted(line: str, i: int) -> tuple[str, int]:
    """The text of the quoted string opening at ``line[i]``, and the index just past its closing quote."""
    i += 1
    n = len(line)
    buf: list[str] = []
    while i < n and line[i] != '"':
        c = line[i]
        if c == "\\" and i + 1 < n:
            kind = line[i + 1]
            width = _HEX_ESCAPES.get(kind)
            if width is not None:
                digits = line[i + 2:i + 2 + width]
                try:
                    if len(digits) == width:
                        buf.append(chr(int(digits, 16)))
                        i += 2 + width
                        continue
                except ValueError:
                    pass
            buf.append(_SHORT_UNESCAPES.get(kind, kind))  # \\ and \" (and anything else) stand for themselves
            i += 2
        else:
            buf.append(c)
            i += 1
    return "".join(buf), i + 1


def parse_line(line: str) -> dict[str, str]:
    """Parse one structured line back into a dict (for tests and tools)."""
    out: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        if i >= n:
            break
        if line[i] == '"':
            key, i = _read_quoted(line, i)
            if i >= n or line[i] != "=":
                break
        else:
            eq = line.find("=", i)
            if eq < 0:
                break
            key = line[i:eq]
            i = eq
        i += 1
        if i < n and line[i] == '"':
            out[key], i = _read_quoted(line, i)
        else:
            end = line.find(" ", i)
            end = n if end < 0 else end
            out[key] = line[i:end]
            i = end
    return out
