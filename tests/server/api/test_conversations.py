"""The message store: what a body may hold, the send rate, the cap per account, read marks and
unread counts, paging, and that what was acknowledged is still there after reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import errors
from server.api.conversations import Conversations, Message, clean_body

ALICE = "0x" + "a1" * 32
BOB = "0x" + "b2" * 32
T0 = 1_800_000_000.0


@pytest.fixture
def store(tmp_path: Path):
    conversations = Conversations(tmp_path / "api" / "messages.sqlite")
    yield conversations
    conversations.close()


def test_a_body_is_trimmed_and_keeps_its_newlines_and_tabs() -> None:
    assert clean_body("  Hello,\r\n\tmy bill?\rThanks \n") == "Hello,\n\tmy bill?\nThanks"


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
def test_an_empty_body_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(errors.InvalidRequest, match=r"^body: a message cannot be empty"):
        clean_body(text)


def test_a_body_may_have_the_most_characters_and_no_more() -> None:
    assert clean_body("é" * 20, max_chars=20) == "é" * 20
    assert clean_body("  " + "x" * 20 + "  ", max_chars=20) == "x" * 20  # counted after trimming
    with pytest.raises(errors.InvalidRequest, match=r"^body: .*at most 20 characters; this one has 21"):
        clean_body("x" * 21, max_chars=20)


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\ud800"])
def test_control_characters_and_lone_surrogates_are_refused(char: str) -> None:
    with pytest.raises(errors.InvalidRequest, match=rf"^body: control character U\+{ord(char):04X} at position 3"):
        clean_body(f"abc{char}def")


def test_messages_come_back_in_sending_order_or_newest_first_a_page_at_a_time(store: Conversations) -> None:
    sent = [store.add(ALICE, "customer" if i % 2 else "operator", f"message {i}", T0 + i) for i in range(7)]
    store.add(BOB, "customer", "someone else", T0)
    count, page = store.messages(ALICE, newest_first=True, limit=3, offset=0)
    assert count == 7 and [m.body for m in page] == ["message 6", "message 5", "message 4"]
    count, page = store.messages(ALICE, newest_first=True, limit=3, offset=6)
    assert [m.id for m in page] == [sent[0].id]
    _, oldest = store.messages(ALICE, newest_first=False, limit=2, offset=0)
    assert oldest == sent[:2]
    assert oldest[0].author == "operator" and oldest[0].read_at is None and oldest[0].sent_at == T0


def test_unread_counts_move_with_sends_and_read_marks_of_the_other_side_only(store: Conversations) -> None:
    first = store.add(ALICE, "customer", "one", T0)
    second = store.add(ALICE, "customer", "two", T0 + 1)
    store.add(ALICE, "operator", "an answer", T0 + 2)
    assert (store.unread(ALICE, "operator"), store.unread(ALICE, "customer")) == (2, 1)

    assert store.mark_read(ALICE, "operator", first.id, T0 + 5) == 1
    assert (store.unread(ALICE, "operator"), store.unread(ALICE, "customer")) == (1, 1)
    assert store.mark_read(ALICE, "operator", first.id, T0 + 6) == 0  # already read: its mark stays
    _, rows = store.messages(ALICE, newest_first=False, limit=10, offset=0)
    assert [m.read_at for m in rows] == [T0 + 5, None, None]

    # The customer reading up to the newest id marks the operator's message, never their own.
    assert store.mark_read(ALICE, "customer", 10_000, T0 + 7) == 1
    assert (store.unread(ALICE, "operator"), store.unread(ALICE, "customer")) == (1, 0)
    assert store.mark_read(ALICE, "operator", second.id, T0 + 8) == 1
    assert store.unread(ALICE, "operator") == 0


def test_summaries_give_each_conversations_last_message_and_unread_counts(store: Conversations) -> None:
    assert store.summaries() == {}
    store.add(ALICE, "customer", "hello", T0)
    last = store.add(ALICE, "operator", "hi, how can I help?", T0 + 1)
    store.add(BOB, "customer", "question", T0 + 2)
    store.add(BOB, "customer", "another", T0 + 3)
    summaries = store.summaries()
    assert set(summaries) == {ALICE, BOB}
    alice = summaries[ALICE]
    assert (alice.messages, alice.last, alice.unread_by("operator"), alice.unread_by("customer")) == (2, last, 1, 1)
    bob = summaries[BOB]
    assert (bob.messages, bob.last.body, bob.unread_by("operator"), bob.unread_by("customer")) == (2, "another", 2, 0)
    assert list(store.summaries(BOB)) == [BOB]


def test_a_side_sending_too_fast_to_one_account_is_told_when_to_retry(tmp_path: Path) -> None:
    store = Conversations(tmp_path / "m.sqlite", rate_per_minute=3)
    for i in range(3):
        store.add(ALICE, "customer", f"m{i}", T0 + i * 10)
    with pytest.raises(errors.TooManyMessages) as refused:
        store.add(ALICE, "customer", "one too many", T0 + 25)
    assert refused.value.retry_after == 35  # the first of the three leaves the minute at T0 + 60
    assert (refused.value.code, refused.value.status) == ("too_many_messages", 429)
    # The operator's answers and another account's messages count separately.
    store.add(ALICE, "operator", "answer", T0 + 25)
    store.add(BOB, "customer", "elsewhere", T0 + 25)
    store.add(ALICE, "customer", "a minute later", T0 + 60.5)
    assert store.messages(ALICE, False, 10, 0)[0] == 5
    store.close()


def test_a_full_conversation_refuses_new_messages_and_keeps_every_old_one(tmp_path: Path) -> None:
    store = Conversations(tmp_path / "m.sqlite", max_per_account=3, rate_per_minute=100)
    kept = [store.add(ALICE, "customer", f"m{i}", T0 + i) for i in range(3)]
    for author in ("customer", "operator"):
        with pytest.raises(errors.ConversationFull, match="MESSAGE_MAX_PER_ACCOUNT"):
            store.add(ALICE, author, "no room", T0 + 10)  # type: ignore[arg-type]
    assert store.messages(ALICE, False, 10, 0) == (3, kept)
    store.add(BOB, "customer", "another account has room", T0 + 10)
    store.close()


def test_what_was_stored_is_still_there_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "messages.sqlite"
    store = Conversations(path)
    sent = store.add(ALICE, "customer", "kept", T0)
    store.mark_read(ALICE, "operator", sent.id, T0 + 1)
    store.close()
    reopened = Conversations(path)
    assert reopened.messages(ALICE, False, 10, 0) == (1, [
        Message(sent.id, ALICE, "customer", "kept", T0, T0 + 1)])
    assert reopened.add(ALICE, "customer", "next", T0 + 2).id == sent.id + 1
    reopened.close()
