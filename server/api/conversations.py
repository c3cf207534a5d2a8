"""Messages between each account's customer and the operator, in their own SQLite file.

A conversation belongs to an account (its on-chain account reference). The file
(``DATA_DIR/api/messages.sqlite``) holds personal data, so it lives apart from the index, which
is a cache of the chain: it can be exported or erased on its own, and rebuilding the index never
touches it.

Every message keeps when the other side read it (``read_at``; a side never has to read its own
messages), so each side's unread count is the other side's messages without a read mark. A
side marks messages read explicitly (``mark_read``); reading the list changes nothing.

Limits, each a constructor argument with a documented default: a body is 1 to ``max_chars``
characters after trimming, with no control characters but newline and tab; a side may send
``rate_per_minute`` messages to one account in any 60 seconds; an account keeps at most
``max_per_account`` messages, and past that new ones are refused (never is an accepted message
dropped to make room).

Writes are committed with ``synchronous=FULL`` before they are acknowledged: the volume is
small, and a message the API answered 201 for must survive a power cut.
"""

from __future__ import annotations

import math
import sqlite3
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from common import errors
from common.settings import Settings

__all__ = [
    "Author",
    "Message",
    "Summary",
    "Conversations",
    "clean_body",
    "other_side",
    "MAX_CHARS",
    "RATE_PER_MINUTE",
    "MAX_PER_ACCOUNT",
    "RATE_WINDOW",
]

Author = Literal["customer", "operator"]
#: The limits' defaults are the settings' defaults (``MESSAGE_MAX_CHARS``, ``MESSAGE_RATE_PER_MINUTE``,
#: ``MESSAGE_MAX_PER_ACCOUNT``): one definition.
MAX_CHARS = Settings.message_max_chars
RATE_PER_MINUTE = Settings.message_rate_per_minute
MAX_PER_ACCOUNT = Settings.message_max_per_account
#: Seconds over which ``rate_per_minute`` is counted.
RATE_WINDOW = 60.0
#: Control characters a body may hold: line breaks and tabs are text, the rest are not.
ALLOWED_CONTROLS = frozenset("\n\t")
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_ref TEXT NOT NULL,
    author TEXT NOT NULL CHECK (author IN ('customer', 'operator')),
    body TEXT NOT NULL,
    sent_at REAL NOT NULL,
    read_at REAL
);
CREATE INDEX IF NOT EXISTS messages_by_account ON messages (account_ref, id);
CREATE INDEX IF NOT EXISTS messages_by_sender ON messages (account_ref, author, sent_at);
"""
_COLUMNS = "id, account_ref, author, body, sent_at, read_at"


@dataclass(frozen=True)
class Message:
    """One message; ``read_at`` is when the other side marked it read (None: unread)."""

    id: int
    account_ref: str
    author: Author
    body: str
    sent_at: float
    read_at: float | None


@dataclass(frozen=True)
class Summary:
    """An account's conversation in brief: how many messages, the last one, what each side has not read."""

    account_ref: str
    messages: int
    last: Message
    unread_by_customer: int
    unread_by_operator: int

    def unread_by(self, side: Author) -> int:
        """How many of the other side's messages ``side`` has not marked read."""
        return self.unread_by_customer if side == "customer" else self.unread_by_operator


def other_side(side: Author) -> Author:
    """The side a message from ``side`` is written to."""
    return "operator" if side == "customer" else "customer"


def clean_body(text: str, max_chars: int = MAX_CHARS) -> str:
    """A message body trimmed and checked: 1 to ``max_chars`` characters, no control characters but newline and tab.

    Line breaks written as CRLF or CR become a newline first. Raises ``InvalidRequest`` naming
    the field ``body`` and what is wrong with it.
    """
    body = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not body:
        raise errors.InvalidRequest("body: a message cannot be empty")
    if len(body) > max_chars:
        raise errors.InvalidRequest(f"body: a message may have at most {max_chars:,} characters; "
                                    f"this one has {len(body):,}")
    for position, char in enumerate(body):
        category = unicodedata.category(char)
        if (category == "Cc" and char not in ALLOWED_CONTROLS) or category == "Cs":
            raise errors.InvalidRequest(f"body: control character U+{ord(char):04X} at position {position} is "
                                        "not allowed (only newlines and tabs are)")
    return body


def _message(row: tuple[object, ...]) -> Message:
    return Message(int(cast(int, row[0])), str(row[1]), cast(Author, row[2]), str(row[3]), float(cast(float, row[4])),
                   None if row[5] is None else float(cast(float, row[5])))


class Conversations:
    """The message store; one instance per process, used from one thread (the event loop)."""

    def __init__(self, path: Path, *, max_chars: int = MAX_CHARS, rate_per_minute: int = RATE_PER_MINUTE,
                 max_per_account: int = MAX_PER_ACCOUNT) -> None:
        """Open (or create) the store at ``path`` with these limits; ``sqlite3.DatabaseError`` if it is damaged."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_chars = max_chars
        self.rate_per_minute = rate_per_minute
        self.max_per_account = max_per_account
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        # Damage found now stops the start with what to do, rather than failing requests one by one later.
        problem = self.db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if problem != "ok":
            self.db.close()
            raise sqlite3.DatabaseError("quick_check: " + " ".join(str(problem).split()))

    def close(self) -> None:
        """Close the database."""
        self.db.close()

    def add(self, account_ref: str, author: Author, text: str, now: float) -> Message:
        """Store a message from ``author`` after checking its body, the sender's rate and the account's cap.

        Raises ``InvalidRequest`` (the body), ``TooManyMessages`` (with the seconds to wait) or
        ``ConversationFull``; nothing is stored then.
        """
        body = clean_body(text, self.max_chars)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            recent = self.db.execute(
                "SELECT COUNT(*), MIN(sent_at) FROM messages WHERE account_ref=? AND author=? AND sent_at>?",
                (account_ref, author, now - RATE_WINDOW)).fetchone()
            if int(recent[0]) >= self.rate_per_minute:
                wait = max(1, math.ceil(float(recent[1]) + RATE_WINDOW - now))
                raise errors.TooManyMessages(
                    f"at most {self.rate_per_minute} messages a minute may be sent to one account; "
                    f"try again in {wait} s", retry_after=wait)
            held = int(self.db.execute("SELECT COUNT(*) FROM messages WHERE account_ref=?",
                                       (account_ref,)).fetchone()[0])
            if held >= self.max_per_account:
                raise errors.ConversationFull(
                    f"this conversation holds the most messages an account may keep ({self.max_per_account:,}); "
                    "the operator can raise MESSAGE_MAX_PER_ACCOUNT")
            cursor = self.db.execute("INSERT INTO messages (account_ref, author, body, sent_at) VALUES (?,?,?,?)",
                                     (account_ref, author, body, now))
        return Message(int(cast(int, cursor.lastrowid)), account_ref, author, body, now, None)

    def messages(self, account_ref: str, newest_first: bool, limit: int, offset: int) -> tuple[int, list[Message]]:
        """One page of an account's messages in sending order (or newest first), and how many there are."""
        count = int(self.db.execute("SELECT COUNT(*) FROM messages WHERE account_ref=?", (account_ref,)).fetchone()[0])
        order = "DESC" if newest_first else "ASC"
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM messages WHERE account_ref=? ORDER BY id {order} "
                               "LIMIT ? OFFSET ?", (account_ref, limit, offset)).fetchall()
        return count, [_message(r) for r in rows]

    def mark_read(self, account_ref: str, reader: Author, up_to_id: int, now: float) -> int:
        """Mark the other side's unread messages of an account, up to ``up_to_id``, read by ``reader``; how many."""
        with self.db:
            cursor = self.db.execute("UPDATE messages SET read_at=? WHERE account_ref=? AND author=? AND id<=? "
                                     "AND read_at IS NULL", (now, account_ref, other_side(reader), up_to_id))
        return int(cursor.rowcount)

    def unread(self, account_ref: str, reader: Author) -> int:
        """How many of the other side's messages in an account ``reader`` has not marked read."""
        row = self.db.execute("SELECT COUNT(*) FROM messages WHERE account_ref=? AND author=? AND read_at IS NULL",
                              (account_ref, other_side(reader))).fetchone()
        return int(row[0])

    def summaries(self, account_ref: str | None = None) -> dict[str, Summary]:
        """Every conversation with messages (or just ``account_ref``'s), keyed by account reference."""
        where, params = ("WHERE account_ref=?", (account_ref,)) if account_ref is not None else ("", ())
        rows = self.db.execute(
            "SELECT account_ref, COUNT(*), MAX(id), "
            "SUM(author='operator' AND read_at IS NULL), SUM(author='customer' AND read_at IS NULL) "
            f"FROM messages {where} GROUP BY account_ref", params).fetchall()
        if not rows:
            return {}
        last_ids = [int(r[2]) for r in rows]
        lasts = {m.id: m for m in self._by_ids(last_ids)}
        return {str(r[0]): Summary(str(r[0]), int(r[1]), lasts[int(r[2])], int(r[3]), int(r[4])) for r in rows}

    def _by_ids(self, ids: list[int]) -> list[Message]:
        out: list[Message] = []
        for i in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            chunk = ids[i:i + 500]
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM messages WHERE id IN ({','.join('?' * len(chunk))})",
                                   chunk).fetchall()
            out.extend(_message(r) for r in rows)
        return out
