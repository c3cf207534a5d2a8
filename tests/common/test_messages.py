"""The wire protocol (common.messages): every message round trips; anything else is refused with
the right error code."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from common.errors import MalformedMessage, MessageTooLarge, StaleSequence
from common.logs import UNTRUSTED_LIMIT
from common.messages import (
    Ack,
    Auth,
    Bill,
    BillState,
    Challenge,
    ErrorMessage,
    GridAlertMessage,
    Reading,
    TariffInfo,
    Welcome,
    encode,
    error_message,
    parse_message,
)

ADDRESS = "0x" + "aB" * 20
SIGNATURE = "0x" + "12" * 65
NONCE = "0x" + "ef" * 32
BILL = BillState(
    period_id=1, period_start=1_790_000_000, period_energy_wh=1_500, energy_cost=37_005_000,
    standing_charge=662, amount_due=37_005_662,
)
TARIFF = TariffInfo(unit_rate=24_670, standing_charge=57_210, version=2)

MESSAGES: list[BaseModel] = [
    Challenge(
        nonce=NONCE, expires_at=1_790_000_030,
        domain={"name": "SmartMeterBilling", "version": "1", "chainId": 1337, "verifyingContract": ADDRESS},
    ),
    Welcome(
        meter=ADDRESS, account_ref="0x" + "01" * 32, region="north", last_seq=3, last_timestamp=1_790_000_000,
        last_energy_wh=12_000, bill=BILL, tariff=TARIFF, server_time=1_790_000_010,
    ),
    Welcome(
        meter=ADDRESS, account_ref="0x" + "01" * 32, region="north", last_seq=3, last_timestamp=1_790_000_000,
        last_energy_wh=12_000, bill=BILL, tariff=TARIFF, server_time=1_790_000_010, last_used_seq=5,
    ),
    Ack(seq=4),
    Ack(seq=4, status="duplicate"),
    Bill(
        meter=ADDRESS, seq=4, tx_hash="0x" + "99" * 32, block=42, energy_wh=13_000, period_energy_wh=2_500,
        amount_due=61_675_662, tariff=TARIFF,
    ),
    GridAlertMessage(
        id=7, active=True, severity=2, kind="frequency_dip", region="north", message="Reduce usage.",
        expires_at=1_790_003_600,
    ),
    GridAlertMessage(id=7, active=False),
    ErrorMessage(code="stale_sequence", message="the sequence number is not above the last accepted one", seq=4),
    ErrorMessage(code="rate_limited", message="too many messages; slow down"),
    Auth(meter=ADDRESS, nonce=NONCE, signature=SIGNATURE),
    Reading(meter=ADDRESS, seq=2**64 - 1, timestamp=1_790_000_000, energy_wh=0, export_wh=2**64 - 1,
            signature=SIGNATURE),
]


def _reading(**changes: object) -> dict[str, object]:
    wire: dict[str, object] = {
        "type": "reading", "meter": ADDRESS, "seq": 5, "timestamp": 1_790_000_000, "energyWh": 12_345,
        "exportWh": 678, "signature": SIGNATURE,
    }
    wire.update(changes)
    return {k: v for k, v in wire.items() if v is not None}


@pytest.mark.parametrize("message", MESSAGES, ids=[f"{type(m).__name__}-{i}" for i, m in enumerate(MESSAGES)])
def test_every_message_round_trips_through_encode_and_parse(message: BaseModel) -> None:
    wire = encode(message)
    parsed = parse_message(wire)
    assert type(parsed) is type(message)
    assert parsed == message
    assert parse_message(wire.encode()) == message


def test_encoded_fields_are_camel_case_and_none_is_left_out() -> None:
    wire = json.loads(encode(Reading(meter=ADDRESS, seq=1, timestamp=2, energy_wh=3, export_wh=4,
                                     signature=SIGNATURE)))
    assert wire == {
        "type": "reading", "meter": ADDRESS, "seq": 1, "timestamp": 2, "energyWh": 3, "exportWh": 4,
        "signature": SIGNATURE,
    }
    assert "seq" not in json.loads(encode(ErrorMessage(code="overloaded", message="busy")))
    assert json.loads(encode(MESSAGES[1]))["bill"]["periodEnergyWh"] == 1_500


def test_valid_reading_from_the_wire_parses_to_a_reading() -> None:
    parsed = parse_message(json.dumps(_reading()))
    assert parsed == Reading(meter=ADDRESS, seq=5, timestamp=1_790_000_000, energy_wh=12_345, export_wh=678,
                             signature=SIGNATURE)


def test_a_reading_without_its_export_register_is_malformed() -> None:
    with pytest.raises(MalformedMessage) as excinfo:
        parse_message(json.dumps(_reading(exportWh=None)))
    assert "exportWh" in excinfo.value.message


@pytest.mark.parametrize(
    ("wire", "seq"),
    [
        (_reading(seq="5"), None),
        (_reading(seq=1.5), None),
        (_reading(seq=-1), -1),
        (_reading(seq=2**64), 2**64),
        (_reading(energyWh="12345"), 5),
        (_reading(energyWh=-1), 5),
        (_reading(timestamp=None), 5),
        (_reading(signature=None), 5),
        (_reading(signature="0x1234"), 5),
        (_reading(signature="12" * 66), 5),
        (_reading(meter="0x1234"), 5),
        (_reading(meter=None), 5),
        (_reading(extra=1), 5),
        (_reading(type="readings"), 5),
        (_reading(type=None), 5),
        ({"type": "ack"}, None),
        ({"type": "ack", "seq": 1, "status": "lost"}, 1),
        ({"type": "grid_alert", "id": 1, "active": "yes"}, None),
        ({"type": "auth", "meter": ADDRESS, "nonce": "0x12", "signature": SIGNATURE}, None),
        ({"type": "welcome", "meter": ADDRESS}, None),
        ({}, None),
    ],
    ids=[
        "seq-string", "seq-float", "seq-negative", "seq-over-64-bits", "energy-string", "energy-negative",
        "missing-timestamp", "missing-signature", "short-signature", "signature-without-0x", "short-address",
        "missing-meter", "unknown-field", "unknown-type", "missing-type", "ack-missing-seq", "ack-bad-status",
        "alert-active-string", "auth-short-nonce", "welcome-missing-fields", "empty-object",
    ],
)
def test_invalid_message_is_malformed_and_carries_the_reading_seq(wire: dict[str, object], seq: int | None) -> None:
    with pytest.raises(MalformedMessage) as excinfo:
        parse_message(json.dumps(wire))
    assert excinfo.value.code == "malformed_message"
    assert excinfo.value.seq == seq


def test_malformed_message_names_the_offending_field() -> None:
    with pytest.raises(MalformedMessage) as excinfo:
        parse_message(json.dumps(_reading(energyWh="lots")))
    assert "energyWh" in excinfo.value.message


@pytest.mark.parametrize(
    "raw",
    ["[]", '"reading"', "42", "null", "true", '[{"type": "ack", "seq": 1}]'],
    ids=["array", "string", "number", "null", "bool", "array-of-message"],
)
def test_json_that_is_not_an_object_is_malformed(raw: str) -> None:
    with pytest.raises(MalformedMessage) as excinfo:
        parse_message(raw)
    assert excinfo.value.code == "malformed_message"
    assert "JSON object" in excinfo.value.message


@pytest.mark.parametrize("raw", ["", "{", "{'type': 'ack'}", b"\xff\xfe\x00", '{"type": "ack", "seq": 1'])
def test_text_that_is_not_json_is_malformed(raw: str | bytes) -> None:
    with pytest.raises(MalformedMessage) as excinfo:
        parse_message(raw)
    assert excinfo.value.code == "malformed_message"


def test_message_over_the_size_limit_is_too_large_and_at_the_limit_is_accepted() -> None:
    wire = encode(Ack(seq=1))
    assert parse_message(wire, max_bytes=len(wire)) == Ack(seq=1)
    with pytest.raises(MessageTooLarge) as excinfo:
        parse_message(wire, max_bytes=len(wire) - 1)
    assert excinfo.value.code == "message_too_large"
    with pytest.raises(MessageTooLarge):
        parse_message(wire.encode(), max_bytes=len(wire) - 1)


def test_oversize_check_comes_before_json_parsing() -> None:
    with pytest.raises(MessageTooLarge):
        parse_message("x" * 5_000, max_bytes=4_096)


def test_size_limit_counts_utf8_bytes_of_a_text_frame() -> None:
    wire = encode(ErrorMessage(code="internal_error", message="é" * 100))
    assert len(wire.encode()) > len(wire)
    with pytest.raises(MessageTooLarge):
        parse_message(wire, max_bytes=len(wire))


def test_error_message_carries_the_error_code_text_and_seq() -> None:
    wire = error_message(StaleSequence(seq=9))
    assert wire == ErrorMessage(code="stale_sequence", message=StaleSequence.default_message, seq=9)
    assert parse_message(encode(wire)) == wire


@pytest.mark.parametrize("snake", ["energy_wh", "Energy_wh"])
def test_a_reading_with_a_snake_case_field_name_is_malformed_and_says_to_use_camel_case(snake: str) -> None:
    wire = _reading(energyWh=None)
    wire[snake] = 12_345
    with pytest.raises(MalformedMessage) as excinfo:
        parse_message(json.dumps(wire))
    assert excinfo.value.seq == 5
    if snake == "energy_wh":
        assert "camelCase" in excinfo.value.message and "energyWh" in excinfo.value.message


def test_snake_case_names_are_refused_in_nested_objects_too() -> None:
    wire = json.loads(encode(MESSAGES[1]))
    wire["bill"]["period_energy_wh"] = wire["bill"].pop("periodEnergyWh")
    with pytest.raises(MalformedMessage) as excinfo:
        parse_message(json.dumps(wire))
    assert "bill.periodEnergyWh" in excinfo.value.message


def test_python_code_still_builds_messages_by_field_name_and_they_go_out_camel_case() -> None:
    reading = Reading(meter=ADDRESS, seq=1, timestamp=2, energy_wh=3, export_wh=4, signature=SIGNATURE)
    assert reading.energy_wh == 3 and '"energyWh":3' in encode(reading) and '"exportWh":4' in encode(reading)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (json.dumps(_reading())[:-1] + ', "seq": 6}', "seq"),
        (json.dumps(_reading())[:-1] + ', "energyWh": 99}', "energyWh"),
        ('{"type": "reading", "type": "reading"}', "type"),
        (encode(MESSAGES[1]).replace('"periodId":1', '"periodId":1,"periodId":2'), "periodId"),
        ('{"type": "challenge", "domain": {"chainId": 1, "chainId": 2}}', "chainId"),
    ],
    ids=["seq-twice", "energy-twice", "type-twice", "nested-bill", "challenge-domain"],
)
def test_a_key_given_twice_in_any_object_is_malformed_and_named(raw: str, key: str) -> None:
    with pytest.raises(MalformedMessage) as excinfo:
        parse_message(raw)
    assert excinfo.value.code == "malformed_message"
    assert f'"{key}" appears twice' in excinfo.value.message


def test_server_messages_ignore_unknown_fields_while_meter_messages_refuse_them() -> None:
    welcome = json.loads(encode(MESSAGES[2]))
    welcome["someFutureField"] = {"x": 1}
    welcome["bill"]["futureBreakdown"] = [1, 2]
    assert parse_message(json.dumps(welcome)) == MESSAGES[2]
    assert parse_message('{"type": "ack", "seq": 4, "latencyMs": 3}') == Ack(seq=4)
    with pytest.raises(MalformedMessage):
        parse_message(json.dumps(_reading(futureField=1)))
    with pytest.raises(MalformedMessage):
        parse_message(json.dumps({"type": "auth", "meter": ADDRESS, "nonce": NONCE, "signature": SIGNATURE, "x": 1}))


def test_welcome_carries_the_last_used_seq_only_when_set() -> None:
    assert "lastUsedSeq" not in json.loads(encode(MESSAGES[1]))
    assert json.loads(encode(MESSAGES[2]))["lastUsedSeq"] == 5


ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=3_000)


@given(ANY_TEXT, ANY_TEXT)
def test_an_error_message_never_echoes_peer_text_unescaped_or_unbounded(tag: str, key: str) -> None:
    frames = [json.dumps({"type": tag}), json.dumps({**_reading(), key or "k": 1}),
              '{"type": "reading", ' + json.dumps(key) + ": 1, " + json.dumps(key) + ": 2}",
              json.dumps({"type": "challenge", "nonce": NONCE, "expiresAt": 1, "domain": {key: 1}, "extra": 1}),
              json.dumps({"type": "welcome", "meter": ADDRESS, "bill": {key: 1}})]
    for raw in frames:
        try:
            parse_message(raw)
        except MalformedMessage as err:
            assert err.message.isprintable(), err.message
            assert len(err.message) <= UNTRUSTED_LIMIT + len("...[9999 more characters]"), err.message
