"""The EIP-712 types meters sign: readings, demand-response opt-outs and their withdrawals (checked on chain) and
login challenges.

One definition, imported by the meters (to sign), the gateway (to check before paying gas)
and the tests. The domain binds every signature to one chain and one deployment, so a reading
signed for another contract or chain id never verifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from coincurve import PublicKey
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from common.dr_terms import Terms

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "READING_TYPES",
    "LOGIN_TYPES",
    "TERMS_TYPE",
    "OPT_OUT_TYPES",
    "OPT_OUT_WITHDRAWAL_TYPES",
    "DEMAND_RESPONSE_DOMAIN_NAME",
    "Domain",
    "optout_digest",
    "sign_optout",
    "recover_optout_signer",
    "ReadingData",
    "reading_digest",
    "sign_reading",
    "recover_reading_signer",
    "login_typed_data",
    "sign_login",
    "recover_login_signer",
    "login_digest",
    "checksum_address",
]

DOMAIN_NAME = "SmartMeterBilling"
DOMAIN_VERSION = "1"

READING_TYPES: dict[str, list[dict[str, str]]] = {
    "Reading": [
        {"name": "meter", "type": "address"},
        {"name": "seq", "type": "uint64"},
        {"name": "timestamp", "type": "uint64"},
        {"name": "energyWh", "type": "uint64"},
        {"name": "exportWh", "type": "uint64"},
    ]
}

LOGIN_TYPES: dict[str, list[dict[str, str]]] = {
    "Login": [
        {"name": "meter", "type": "address"},
        {"name": "nonce", "type": "bytes32"},
    ]
}

#: A demand-response event's terms, as an opt-out signs them.
TERMS_TYPE: list[dict[str, str]] = [
    {"name": "start", "type": "uint32"},
    {"name": "duration", "type": "uint32"},
    {"name": "rampUp", "type": "uint32"},
    {"name": "signalKind", "type": "uint8"},
    {"name": "signalValue", "type": "uint32"},
    {"name": "creditRate", "type": "uint32"},
]
_OPT_OUT_FIELDS: list[dict[str, str]] = [
    {"name": "meter", "type": "address"},
    {"name": "eventId", "type": "uint64"},
    {"name": "modification", "type": "uint32"},
    {"name": "terms", "type": "Terms"},
]
#: A meter's opt-out of a demand-response event's terms (its id, modification number and terms), signed under
#: the DemandResponse contract's domain: a change of the event lapses it, and it never fits another event.
OPT_OUT_TYPES: dict[str, list[dict[str, str]]] = {"OptOut": _OPT_OUT_FIELDS, "Terms": TERMS_TYPE}
#: A meter's withdrawal of its opt-out of an event's terms, signed the same way.
OPT_OUT_WITHDRAWAL_TYPES: dict[str, list[dict[str, str]]] = {"OptOutWithdrawal": _OPT_OUT_FIELDS, "Terms": TERMS_TYPE}

DEMAND_RESPONSE_DOMAIN_NAME = "DemandResponse"

_EIP712_DOMAIN_TYPEHASH = keccak(
    text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_READING_TYPEHASH = keccak(
    text="Reading(address meter,uint64 seq,uint64 timestamp,uint64 energyWh,uint64 exportWh)"
)
_LOGIN_TYPEHASH = keccak(text="Login(address meter,bytes32 nonce)")
_TERMS_TYPE = "Terms(uint32 start,uint32 duration,uint32 rampUp,uint8 signalKind,uint32 signalValue,uint32 creditRate)"
_TERMS_TYPEHASH = keccak(text=_TERMS_TYPE)
_OPT_OUT_TYPEHASH = keccak(text="OptOut(address meter,uint64 eventId,uint32 modification,Terms terms)" + _TERMS_TYPE)
_OPT_OUT_WITHDRAWAL_TYPEHASH = keccak(
    text="OptOutWithdrawal(address meter,uint64 eventId,uint32 modification,Terms terms)" + _TERMS_TYPE)


@lru_cache(maxsize=65_536)
def checksum_address(raw: bytes) -> str:
    """The EIP-55 checksummed form of a 20-byte address, cached (hashing it costs ~0.2 ms and
    a fleet's few meters come back again and again, in signatures and in events)."""
    return to_checksum_address(raw)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:] if address.startswith("0x") else address)


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain of one deployment of a contract (the billing one unless ``name`` says otherwise)."""

    chain_id: int
    verifying_contract: str
    name: str = DOMAIN_NAME

    def as_dict(self) -> dict[str, Any]:
        """The domain as eth-account's typed-data dictionaries expect it."""
        return {
            "name": self.name,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }

    def separator(self) -> bytes:
        """The domain separator, as the contract's ``domainSeparator()`` returns it."""
        return keccak(
            _EIP712_DOMAIN_TYPEHASH
            + keccak(text=self.name)
            + keccak(text=DOMAIN_VERSION)
            + _word(self.chain_id)
            + _address_word(self.verifying_contract)
        )


@dataclass(frozen=True)
class ReadingData:
    """The signed fields of one reading: ``energy_wh`` is the import register, ``export_wh`` the export one."""

    meter: str
    seq: int
    timestamp: int
    energy_wh: int
    export_wh: int = 0

    def as_message(self) -> dict[str, Any]:
        """The reading as an EIP-712 message dictionary."""
        return {
            "meter": to_checksum_address(self.meter),
            "seq": self.seq,
            "timestamp": self.timestamp,
            "energyWh": self.energy_wh,
            "exportWh": self.export_wh,
        }


def reading_digest(domain_separator: bytes, reading: ReadingData) -> bytes:
    """The EIP-712 digest of a reading, computed directly (fast path for the gateway)."""
    struct_hash = keccak(
        _READING_TYPEHASH
        + _address_word(reading.meter)
        + _word(reading.seq)
        + _word(reading.timestamp)
        + _word(reading.energy_wh)
        + _word(reading.export_wh)
    )
    return keccak(b"\x19\x01" + domain_separator + struct_hash)


def sign_reading(private_key: bytes | str, domain: Domain, reading: ReadingData) -> str:
    """Sign a reading as EIP-712 typed data; returns the 65-byte signature as 0x-hex."""
    signed = Account.sign_typed_data(
        private_key,
        domain_data=domain.as_dict(),
        message_types=READING_TYPES,
        message_data=reading.as_message(),
    )
    return "0x" + bytes(signed.signature).hex()


def _recover(digest: bytes, signature: str | bytes) -> str | None:
    sig = bytes.fromhex(signature.removeprefix("0x")) if isinstance(signature, str) else bytes(signature)
    if len(sig) != 65:
        return None
    # v must be 27 or 28, as OpenZeppelin's ECDSA requires on chain: accepting 0/1 here would let a
    # reading pass the gateway and then fail on chain.
    if sig[64] not in (27, 28):
        return None
    v = sig[64] - 27
    r = int.from_bytes(sig[0:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    # Reject high-s signatures as OpenZeppelin's ECDSA does (malleability).
    if s > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0 or r == 0 or s == 0:
        return None
    try:
        pub = PublicKey.from_signature_and_message(sig[:64] + bytes([v]), digest, hasher=None)
    except Exception:  # noqa: BLE001 - any failure to recover means "not signed by anyone"
        return None
    return checksum_address(keccak(pub.format(compressed=False)[1:])[-20:])


def recover_reading_signer(domain_separator: bytes, reading: ReadingData, signature: str | bytes) -> str | None:
    """The address that signed ``reading``, or None when the signature is malformed."""
    try:
        return _recover(reading_digest(domain_separator, reading), signature)
    except ValueError:
        return None


def login_typed_data(domain: Domain, meter: str, nonce: bytes) -> dict[str, Any]:
    """The full EIP-712 structure a meter signs to log in (for independent clients)."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            **LOGIN_TYPES,
        },
        "primaryType": "Login",
        "domain": domain.as_dict(),
        "message": {"meter": to_checksum_address(meter), "nonce": nonce},
    }


def _sign_as_meter(private_key: bytes | str, domain: Domain, types: dict[str, Any], fields: dict[str, Any]) -> str:
    """Sign a typed message whose ``meter`` is the key's own address; the signature as 0x-hex."""
    meter = Account.from_key(private_key).address
    signed = Account.sign_typed_data(
        private_key, domain_data=domain.as_dict(), message_types=types, message_data={"meter": meter, **fields})
    return "0x" + bytes(signed.signature).hex()


def sign_login(private_key: bytes | str, domain: Domain, nonce: bytes) -> str:
    """Sign a login challenge; returns the signature as 0x-hex."""
    return _sign_as_meter(private_key, domain, LOGIN_TYPES, {"nonce": nonce})


def login_digest(domain_separator: bytes, meter: str, nonce: bytes) -> bytes:
    """The EIP-712 digest of a login, computed directly (same value as ``login_typed_data``)."""
    struct_hash = keccak(_LOGIN_TYPEHASH + _address_word(meter) + nonce.rjust(32, b"\0"))
    return keccak(b"\x19\x01" + domain_separator + struct_hash)


def recover_login_signer(domain: Domain, meter: str, nonce: bytes, signature: str) -> str | None:
    """The address that signed a login for ``meter`` and ``nonce``, or None if malformed."""
    try:
        return _recover(login_digest(domain.separator(), meter, nonce), signature)
    except ValueError:
        return None


def _terms_message(terms: Terms) -> dict[str, int]:
    return {"start": terms.start, "duration": terms.duration, "rampUp": terms.ramp_up,
            "signalKind": int(terms.signal_kind), "signalValue": terms.signal_value, "creditRate": terms.credit_rate}


def optout_digest(domain: Domain, meter: str, event_id: int, modification: int, terms: Terms, *,
                  withdrawal: bool = False) -> bytes:
    """The EIP-712 digest of a meter's opt-out of an event's terms (or, ``withdrawal``, of its withdrawal), as
    DemandResponse computes it."""
    terms_hash = keccak(_TERMS_TYPEHASH + b"".join(_word(v) for v in terms.as_struct()))
    type_hash = _OPT_OUT_WITHDRAWAL_TYPEHASH if withdrawal else _OPT_OUT_TYPEHASH
    struct_hash = keccak(type_hash + _address_word(meter) + _word(event_id) + _word(modification) + terms_hash)
    return keccak(b"\x19\x01" + domain.separator() + struct_hash)


def sign_optout(private_key: bytes | str, domain: Domain, event_id: int, modification: int, terms: Terms, *,
                withdrawal: bool = False) -> str:
    """Sign an opt-out of an event's terms (or, ``withdrawal``, its withdrawal) with the meter's key; returns the
    signature as 0x-hex."""
    types = OPT_OUT_WITHDRAWAL_TYPES if withdrawal else OPT_OUT_TYPES
    return _sign_as_meter(private_key, domain, types,
                          {"eventId": event_id, "modification": modification, "terms": _terms_message(terms)})


def recover_optout_signer(domain: Domain, meter: str, event_id: int, modification: int, terms: Terms,
                          signature: str, *, withdrawal: bool = False) -> str | None:
    """The address that signed an opt-out (or, ``withdrawal``, its withdrawal) of ``event_id`` at
    ``modification`` with ``terms`` for ``meter``, or None if malformed."""
    try:
        return _recover(optout_digest(domain, meter, event_id, modification, terms, withdrawal=withdrawal),
                        signature)
    except ValueError:
        return None
