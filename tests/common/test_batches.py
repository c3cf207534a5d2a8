"""The packed submitReadings calldata and its gas bound (common.batches)."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_utils import keccak

from common.batches import (
    BATCH_BASE_GAS,
    GAS_PER_EXTRA_PERIOD,
    GAS_PER_GAP_PERIOD,
    GAS_PER_READING,
    LONG_GAP_GAS,
    LOOP_PERIODS,
    MAX_BATCH_GAS,
    MAX_GAP_GAS,
    RECORD_BYTES,
    compact_signature,
    extra_periods,
    gap_gas,
    gas_limit_for,
    pack_reading,
    submit_readings_calldata,
)
from common.eip712 import Domain, ReadingData, sign_reading

METER = Account.from_key("0x" + "22" * 32)
DOMAIN = Domain(1337, "0x" + "ab" * 20)


def test_a_record_is_104_bytes_in_the_documented_order() -> None:
    reading = ReadingData(METER.address, 0x01020304, 0x0A0B0C0D, 0x112233445566, 0x778899AABBCC)
    signature = sign_reading(METER.key, DOMAIN, reading)
    record = pack_reading(reading, signature)
    assert len(record) == RECORD_BYTES
    assert record[:20] == bytes.fromhex(METER.address[2:])
    assert record[20:40] == bytes.fromhex("01020304" "0a0b0c0d" "112233445566" "778899aabbcc")
    raw = bytes.fromhex(signature[2:])
    assert record[40:72] == raw[:32]
    assert int.from_bytes(record[72:104], "big") == ((raw[64] - 27) << 255) | int.from_bytes(raw[32:64], "big")


def test_the_compact_signature_keeps_v_in_the_top_bit() -> None:
    for n in range(4):  # both parities turn up among a few signatures
        reading = ReadingData(METER.address, n + 1, 1_000, 2_000)
        raw = bytes.fromhex(sign_reading(METER.key, DOMAIN, reading)[2:])
        compact = compact_signature(raw)
        assert compact[32] >> 7 == raw[64] - 27 and len(compact) == 64


@pytest.mark.parametrize("signature", ["0x" + "11" * 64, "0x" + "11" * 64 + "00", "0x" + "11" * 32 + "ff" * 32 + "1b"])
def test_signatures_the_contract_would_refuse_are_refused_by_the_encoder(signature: str) -> None:
    with pytest.raises(ValueError):
        compact_signature(signature)


def test_the_calldata_is_the_selector_and_one_abi_bytes_argument() -> None:
    reading = ReadingData(METER.address, 1, 1_000, 2_000, 3)
    data = submit_readings_calldata([(reading, sign_reading(METER.key, DOMAIN, reading))] * 2)
    assert data[:4] == keccak(text="submitReadings(bytes)")[:4]
    assert int.from_bytes(data[4:36], "big") == 32 and int.from_bytes(data[36:68], "big") == 2 * RECORD_BYTES
    assert len(data) == 4 + 64 + 224  # two records padded to a whole number of words


def test_the_gas_bound_grows_with_the_half_hours_a_short_gap_spans() -> None:
    twelve_hours = 12 * 3_600
    assert extra_periods([(0, 1_800), (1_799, 1_801), (100, 100 + twelve_hours)]) == 0 + 1 + 24
    assert gas_limit_for(3, 25) == BATCH_BASE_GAS + 3 * GAS_PER_READING + 25 * GAS_PER_EXTRA_PERIOD


def test_a_long_gap_is_bounded_by_the_closed_form_and_any_silence_fits_a_batch() -> None:
    day = 86_400
    assert gap_gas(0, day + 1) == LONG_GAP_GAS + GAS_PER_GAP_PERIOD * 48
    assert gap_gas(1_000, 1_000 + LOOP_PERIODS * 1_800) == LOOP_PERIODS * GAS_PER_EXTRA_PERIOD
    week = gas_limit_for(1, extra_periods([(0, 7 * day)]))
    assert week < 2_000_000 < gas_limit_for(1, 7 * 48 - 1)  # the per-half-hour bound it replaced
    for days in (30, 400, 4_000):
        bound = gas_limit_for(1, extra_periods([(17, days * day + 17)]))
        assert gap_gas(17, days * day + 17) <= MAX_GAP_GAS and bound <= MAX_BATCH_GAS, days
