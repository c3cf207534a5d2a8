"""The meter's on-disk outbox: readings persist until done, the position survives a reopen."""

from __future__ import annotations

from common.eip712 import ReadingData
from meters.outbox import MeterPosition, Outbox

METER = "0x" + "ab" * 20


def test_readings_and_position_survive_closing_and_reopening(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", METER)
    box.set_position(MeterPosition(336, 1_000, 50_000))
    for seq in (337, 338, 339):
        box.add(ReadingData(METER, seq, 1_000 + seq, 50_000 + seq), "0x" + "11" * 65)
    box.close()
    box = Outbox(tmp_path / "o.sqlite", METER)
    assert [e.seq for e in box.pending()] == [337, 338, 339]
    assert box.position() == MeterPosition(339, 1_339, 50_339)


def test_done_and_done_upto_remove_only_what_they_name(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", METER)
    for seq in range(1, 6):
        box.add(ReadingData(METER, seq, seq, seq), "0x" + "11" * 65)
    assert box.done(3) and not box.done(3)
    assert box.done_upto(2) == 2
    assert [e.seq for e in box.pending()] == [4, 5]
    assert box.count() == 2


def test_clear_forgets_readings_and_position(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", METER)
    box.add(ReadingData(METER, 1, 1, 1), "0x" + "11" * 65)
    box.clear()
    assert box.position() is None and box.count() == 0


def test_the_export_register_is_kept_with_each_reading_and_in_the_position(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", METER)
    box.add(ReadingData(METER, 1, 100, 5_000, 730), "0x" + "11" * 65)
    assert box.reading(box.pending()[0]) == ReadingData(METER, 1, 100, 5_000, 730)
    assert box.position() == MeterPosition(1, 100, 5_000, 730)


def test_an_outbox_written_before_export_is_upgraded_and_its_readings_signed_again(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE outbox (seq INTEGER PRIMARY KEY, timestamp INTEGER NOT NULL, energy_wh INTEGER NOT NULL,
                             signature TEXT NOT NULL);
        CREATE TABLE position (id INTEGER PRIMARY KEY CHECK (id = 1), last_seq INTEGER NOT NULL,
                               last_timestamp INTEGER NOT NULL, last_energy_wh INTEGER NOT NULL);
        INSERT INTO outbox VALUES (7, 700, 9000, '0xold');
        INSERT INTO position VALUES (1, 7, 700, 9000);
    """)
    db.commit()
    db.close()
    box = Outbox(path, METER)
    assert box.needs_resign
    assert box.position() == MeterPosition(7, 700, 9_000, 0)
    signed = []
    assert box.resign(lambda data: signed.append(data) or "0xnew") == 1
    assert signed == [ReadingData(METER, 7, 700, 9_000, 0)]
    assert [e.signature for e in box.pending()] == ["0xnew"] and not box.needs_resign
    box.close()
    assert not Outbox(path, METER).needs_resign  # upgraded once
