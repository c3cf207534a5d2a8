"""Structured log lines (common.logs): one line whatever a value holds, read back exactly."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.logs import (
    REDACTED,
    UNTRUSTED_LIMIT,
    clip,
    escape,
    fingerprint,
    format_fields,
    log_event,
    parse_line,
    redact,
    setup_logging,
)

#: Any code point at all, lone surrogates and unassigned ones included.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)

#: Characters that end or rewrite a line in some viewer: C0 (with NUL, CR, LF, VT, FF, ESC and
#: the file/group/record separators), DEL, C1 (NEL, CSI), the Unicode line and paragraph
#: separators, a bidi override and a lone surrogate (which no UTF-8 file can hold).
LINE_BREAKERS = ["\n", "\r", "\r\n", "\x00", "\x0b", "\x0c", "\x1b", "\x1c", "\x1d", "\x1e", "\x7f", "\x85", "\x9b",
                 "\u2028", "\u2029", "\u202e", "\ud800"]


@given(st.dictionaries(ANY_TEXT, ANY_TEXT, max_size=6))
def test_any_fields_read_back_exactly_from_one_printable_line(fields: dict[str, str]) -> None:
    line = format_fields(fields)
    assert line.isprintable()  # nothing any viewer takes for a line break, a control or an override
    assert parse_line(line) == fields


@pytest.mark.parametrize("breaker", LINE_BREAKERS, ids=[ascii(c) for c in LINE_BREAKERS])
def test_a_value_or_key_holding_a_line_breaker_cannot_forge_a_line(breaker: str) -> None:
    forged = f"x{breaker}ts=2026-01-01T00:00:00.000Z level=error event=forged"
    line = format_fields({"event": "message_refused", "detail": forged, f"k{breaker}ey": 1})
    assert len(line.splitlines()) == 1 and line.isprintable()
    assert parse_line(line) == {"event": "message_refused", "detail": forged, f"k{breaker}ey": "1"}


def test_escapes_are_the_familiar_ones() -> None:
    assert escape('a\r\n\t"\\') == 'a\\r\\n\\t\\"\\\\'
    assert escape("\x1b[2J\x00\x85") == "\\x1b[2J\\x00\\x85"
    assert escape("\u2028\u2029\ufeff") == "\\u2028\\u2029\\ufeff"
    assert escape("\U000e0001") == "\\U000e0001"
    assert escape("plain £ text é") == "plain £ text é"


def test_a_logged_forgery_stays_on_one_line_of_the_file(tmp_path) -> None:
    path = tmp_path / "server.log"
    setup_logging("INFO", stream=open(tmp_path / "stderr", "w"), path=str(path))  # noqa: SIM115
    try:
        hostile = "reading\r\n2026 level=error event=chain_failed\u2028\x1b[31m\x00\ud800"
        log_event(logging.getLogger("gateway"), "message_refused", logging.WARNING, detail=hostile, seq=3)
        logging.getLogger("websockets").warning("third party text %s", hostile)
    finally:
        for handler in logging.getLogger().handlers:
            handler.close()
        logging.getLogger().handlers.clear()
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 3, lines  # two records, two lines, no "--- Logging error ---"
    first, second = parse_line(lines[0]), parse_line(lines[1])
    assert (first["event"], first["detail"], first["seq"]) == ("message_refused", hostile, "3")
    assert second["msg"] == f"third party text {hostile}"
    assert (tmp_path / "stderr").read_text(encoding="utf-8", errors="replace").count("\n") == 2


def test_lines_written_before_escaping_widened_still_parse() -> None:
    assert parse_line('a=1 b="two words" c="quote \\" and \\\\ and \\n" d=') == {
        "a": "1", "b": "two words", "c": 'quote " and \\ and \n', "d": ""}


def test_clip_bounds_untrusted_text_and_says_how_much_was_cut() -> None:
    assert clip("short") == "short"
    assert clip(12345) == "12345"
    exact = "x" * UNTRUSTED_LIMIT
    assert clip(exact) == exact
    clipped = clip("y" * 10_000)
    assert clipped.startswith("y" * UNTRUSTED_LIMIT) and clipped.endswith("...[9800 more characters]")
    assert len(clipped) < UNTRUSTED_LIMIT + 30
    assert clip("abcdef", limit=3) == "abc...[3 more characters]"
    assert clip(clip("abcdef", limit=3), limit=3) == "abc...[3 more characters]"  # clipped once, said once


# ---------------------------------------------------------------- credentials


KEY = "uJ2_TIXw-0123456789abcdefABCDEF"
TOKEN = "v1.0x1eaF00000000000000000000000000000000.1790000000.0123456789abcdef"


@pytest.mark.parametrize(("text", "expected"), [
    (f'127.0.0.1:35480 - "WebSocket /api/v1/live?key={KEY}" [accepted]',
     f'127.0.0.1:35480 - "WebSocket /api/v1/live?key={REDACTED}" [accepted]'),
    (f"/api/v1/live?page=2&token={TOKEN}&x=1", f"/api/v1/live?page=2&token={REDACTED}&x=1"),
    (f"GET /a?API-Key={KEY};access_token={TOKEN}", f"GET /a?API-Key={REDACTED};access_token={REDACTED}"),
    (f"http://127.0.0.1:8766/#key={KEY}", f"http://127.0.0.1:8766/#key={REDACTED}"),
    (f"Authorization: Bearer {TOKEN}", f"Authorization: Bearer {REDACTED}"),
    (f"X-API-Key: {KEY}", f"X-API-Key: {REDACTED}"),
    (f"[(b'x-api-key', b'{KEY}')]", f"[(b'x-api-key', b'{REDACTED}')]"),
    ("postgresql://index:s3cret@127.0.0.1:5432/db", f"postgresql://index:{REDACTED}@127.0.0.1:5432/db"),
])
def test_redact_takes_out_every_way_a_credential_is_written(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "send an API key (X-API-Key) or a bearer token from /api/v1/auth/token",
    "/api/v1/meters?page=2&monkey=1&keyword=x", "wss://127.0.0.1:8765 peer=a@b", "event=login meter=0xab",
])
def test_redact_leaves_text_without_credentials_alone(text: str) -> None:
    assert redact(text) == text


def test_fingerprint_tells_secrets_apart_without_revealing_them() -> None:
    assert fingerprint(KEY) == fingerprint(KEY) != fingerprint(KEY + "x")
    assert fingerprint(KEY).startswith("sha256:") and len(fingerprint(KEY)) == len("sha256:") + 8
    assert KEY[:8] not in fingerprint(KEY)


def test_every_handler_redacts_third_party_lines_fields_and_tracebacks(tmp_path) -> None:
    path = tmp_path / "server.log"
    setup_logging("INFO", stream=open(tmp_path / "stderr", "w"), path=str(path))  # noqa: SIM115
    try:
        # uvicorn's own line, as its websockets implementation writes it (message and arguments apart).
        logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [%s]', "127.0.0.1:35480",
                                                f"/api/v1/live?key={KEY}&token={TOKEN}", "accepted")
        log_event(logging.getLogger("api"), "api_failed", logging.ERROR, path=f"/api/v1/live?key={KEY}",
                  token=TOKEN)
        try:
            raise RuntimeError(f"could not open http://127.0.0.1/?key={KEY}")
        except RuntimeError:
            logging.getLogger("api").exception("failed with Bearer %s", TOKEN)
    finally:
        for handler in logging.getLogger().handlers:
            handler.close()
        logging.getLogger().handlers.clear()
    for written in (path.read_text(), (tmp_path / "stderr").read_text()):
        assert KEY not in written and TOKEN not in written and TOKEN[-16:] not in written, written
        uvicorn, failed, traceback = (parse_line(line) for line in written.splitlines())
        assert uvicorn["msg"] == (f'127.0.0.1:35480 - "WebSocket /api/v1/live?key={REDACTED}&token={REDACTED}" '
                                  "[accepted]")
        assert (failed["path"], failed["token"]) == (f"/api/v1/live?key={REDACTED}", REDACTED)
        assert traceback["msg"] == f"failed with Bearer {REDACTED}"
        assert traceback["exc"] == f"RuntimeError: could not open http://127.0.0.1/?key={REDACTED}"
