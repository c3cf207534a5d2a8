"""common.eip712 agrees with eth-account's EIP-712 encoder and with the deployed contract, and
treats malformed or malleable signatures as signed by no one."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_keys import keys

from common.deployment import Deployment
from common.eip712 import (
    READING_TYPES,
    Domain,
    ReadingData,
    login_typed_data,
    reading_digest,
    recover_login_signer,
    recover_reading_signer,
    sign_login,
    sign_reading,
)

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
METER = Account.from_key("0x" + "11" * 32)
DOMAIN = Domain(1337, "0x" + "ab" * 20)
READING = ReadingData(METER.address, 17, 1_790_000_000, 123_456_789, 4_321)
NONCE = bytes(range(32))


def _typed(domain: Domain, reading: ReadingData):
    return encode_typed_data(domain.as_dict(), READING_TYPES, reading.as_message())


def _high_s(signature: str) -> str:
    """The malleable twin of a signature: s -> n - s with v flipped."""
    raw = bytes.fromhex(signature[2:])
    s = SECP256K1_N - int.from_bytes(raw[32:64], "big")
    return "0x" + (raw[:32] + s.to_bytes(32, "big") + bytes([55 - raw[64]])).hex()


def test_reading_digest_equals_eth_account_typed_data_hash() -> None:
    assert reading_digest(DOMAIN.separator(), READING) == _hash_eip191_message(_typed(DOMAIN, READING))


def test_domain_separator_equals_eth_account_domain_hash() -> None:
    assert DOMAIN.separator() == _typed(DOMAIN, READING).header


def test_domain_separator_equals_the_deployed_contract_domain_separator(chain, deployment: Deployment) -> None:
    contract = chain.contract(deployment)
    assert contract.functions.domainSeparator().call() == deployment.domain.separator()


def test_domain_separator_differs_by_chain_id_and_by_verifying_contract() -> None:
    assert Domain(1, DOMAIN.verifying_contract).separator() != DOMAIN.separator()
    assert Domain(1337, "0x" + "cd" * 20).separator() != DOMAIN.separator()


def test_sign_reading_matches_eth_account_sign_typed_data() -> None:
    expected = Account.sign_typed_data(METER.key, DOMAIN.as_dict(), READING_TYPES, READING.as_message())
    assert sign_reading(METER.key, DOMAIN, READING) == "0x" + bytes(expected.signature).hex()


def test_signed_reading_recovers_to_its_meter_here_and_in_eth_account() -> None:
    signature = sign_reading(METER.key, DOMAIN, READING)
    assert len(bytes.fromhex(signature[2:])) == 65
    assert recover_reading_signer(DOMAIN.separator(), READING, signature) == METER.address
    assert recover_reading_signer(DOMAIN.separator(), READING, bytes.fromhex(signature[2:])) == METER.address
    assert Account.recover_message(_typed(DOMAIN, READING), signature=signature) == METER.address


def test_reading_signature_with_v_as_zero_or_one_is_refused_as_on_chain() -> None:
    # OpenZeppelin's ECDSA accepts only v = 27 or 28; the gateway must not accept what the chain refuses.
    raw = bytes.fromhex(sign_reading(METER.key, DOMAIN, READING)[2:])
    assert recover_reading_signer(DOMAIN.separator(), READING, raw[:64] + bytes([raw[64] - 27])) is None


@pytest.mark.parametrize(
    "altered",
    [
        ReadingData(READING.meter, READING.seq + 1, READING.timestamp, READING.energy_wh, READING.export_wh),
        ReadingData(READING.meter, READING.seq, READING.timestamp + 1, READING.energy_wh, READING.export_wh),
        ReadingData(READING.meter, READING.seq, READING.timestamp, READING.energy_wh + 1, READING.export_wh),
        ReadingData(READING.meter, READING.seq, READING.timestamp, READING.energy_wh, READING.export_wh + 1),
    ],
    ids=["seq", "timestamp", "energy", "export"],
)
def test_altered_reading_does_not_recover_to_its_meter(altered: ReadingData) -> None:
    signature = sign_reading(METER.key, DOMAIN, READING)
    recovered = recover_reading_signer(DOMAIN.separator(), altered, signature)
    assert recovered is not None
    assert recovered != METER.address


def test_reading_signed_for_another_domain_does_not_recover_to_its_meter() -> None:
    for other in (Domain(1, DOMAIN.verifying_contract), Domain(1337, "0x" + "cd" * 20)):
        signature = sign_reading(METER.key, other, READING)
        assert recover_reading_signer(DOMAIN.separator(), READING, signature) != METER.address


def _malformed() -> dict[str, str | bytes]:
    good = sign_reading(METER.key, DOMAIN, READING)
    raw = bytes.fromhex(good[2:])
    return {
        "empty": "0x",
        "64 bytes": "0x" + raw[:64].hex(),
        "66 bytes": good + "00",
        "not hex": "0x" + "zz" * 65,
        "v is 29": "0x" + (raw[:64] + bytes([29])).hex(),
        "r is zero": "0x" + (bytes(32) + raw[32:]).hex(),
        "s is zero": "0x" + (raw[:32] + bytes(32) + raw[64:]).hex(),
        "r above the curve order": "0x" + ((SECP256K1_N + 1).to_bytes(32, "big") + raw[32:]).hex(),
        "high s": _high_s(good),
    }


@pytest.mark.parametrize("case", list(_malformed()))
def test_malformed_reading_signature_recovers_to_none(case: str) -> None:
    assert recover_reading_signer(DOMAIN.separator(), READING, _malformed()[case]) is None


def test_high_s_twin_is_valid_secp256k1_but_rejected_like_openzeppelin() -> None:
    twin = bytes.fromhex(_high_s(sign_reading(METER.key, DOMAIN, READING))[2:])
    r, s = int.from_bytes(twin[:32], "big"), int.from_bytes(twin[32:64], "big")
    signature = keys.Signature(vrs=(twin[64] - 27, r, s))
    digest = reading_digest(DOMAIN.separator(), READING)
    assert signature.recover_public_key_from_msg_hash(digest).to_checksum_address() == METER.address
    assert recover_reading_signer(DOMAIN.separator(), READING, "0x" + twin.hex()) is None


def test_login_signature_round_trips_to_the_meter() -> None:
    signature = sign_login(METER.key, DOMAIN, NONCE)
    assert recover_login_signer(DOMAIN, METER.address, NONCE, signature) == METER.address


def test_login_signature_agrees_with_eth_account_full_message_encoding() -> None:
    signature = sign_login(METER.key, DOMAIN, NONCE)
    signable = encode_typed_data(full_message=login_typed_data(DOMAIN, METER.address, NONCE))
    assert Account.recover_message(signable, signature=signature) == METER.address


def test_login_signature_for_another_nonce_meter_or_domain_does_not_recover_to_the_meter() -> None:
    signature = sign_login(METER.key, DOMAIN, NONCE)
    other = Account.from_key("0x" + "22" * 32).address
    assert recover_login_signer(DOMAIN, METER.address, bytes(32), signature) != METER.address
    assert recover_login_signer(DOMAIN, other, NONCE, signature) not in (METER.address, other)
    assert recover_login_signer(Domain(1, DOMAIN.verifying_contract), METER.address, NONCE, signature) != METER.address


@pytest.mark.parametrize("case", ["64 bytes", "not hex", "v is 29", "s is zero"])
def test_malformed_login_signature_recovers_to_none(case: str) -> None:
    signature = sign_login(METER.key, DOMAIN, NONCE)
    raw = bytes.fromhex(signature[2:])
    bad = {
        "64 bytes": "0x" + raw[:64].hex(),
        "not hex": "0x" + "zz" * 65,
        "v is 29": "0x" + (raw[:64] + bytes([29])).hex(),
        "s is zero": "0x" + (raw[:32] + bytes(32) + raw[64:]).hex(),
    }[case]
    assert recover_login_signer(DOMAIN, METER.address, NONCE, bad) is None


def test_high_s_login_signature_recovers_to_none() -> None:
    signature = _high_s(sign_login(METER.key, DOMAIN, NONCE))
    assert recover_login_signer(DOMAIN, METER.address, NONCE, signature) is None
