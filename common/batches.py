"""The ``submitReadings`` call the gateway pays for: its packed calldata and its gas bound.

One definition for everyone who submits readings: the gateway's batcher, provisioning's
history, the benchmark's raw-chain run, the gas report and the tests. The batch is one ABI
``bytes`` argument holding 104-byte records without padding (docs/tariffs.md): meter (20),
seq (4), timestamp (4), import register (6), export register (6), and the signature in its
64-byte EIP-2098 form (r, then yParity << 255 | s).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from eth_abi import encode as abi_encode
from eth_utils import keccak

from common.eip712 import ReadingData
from common.tariff import MAX_REGISTER_WH, MAX_SEQ, MAX_TIMESTAMP, PERIOD_SECONDS

__all__ = [
    "BATCH_BASE_GAS",
    "GAS_PER_READING",
    "GAS_PER_EXTRA_PERIOD",
    "GAS_PER_GAP_PERIOD",
    "LONG_GAP_GAS",
    "LOOP_PERIODS",
    "MAX_GAP_GAS",
    "MAX_BATCH_GAS",
    "RECORD_BYTES",
    "compact_signature",
    "extra_periods",
    "gap_gas",
    "gas_limit_for",
    "pack_reading",
    "submit_readings_calldata",
]

#: Gas bound per batch: a fixed part plus a generous per-reading part (measured ~12-13k per reading).
BATCH_BASE_GAS = 80_000
GAS_PER_READING = 40_000
#: Each settlement period a reading spans beyond its first (a gap) costs its share and its price: measured
#: ~3,700 gas with a banded clock-time import and day-ahead export tariff (tests/contracts).
GAS_PER_EXTRA_PERIOD = 6_000
#: A reading spanning more periods than this beyond its first is priced in closed form (the contract's
#: ``LOOP_PERIODS``): its cost grows with the tariff versions, clock changes and published day-ahead prices
#: the gap crosses, not with its half hours.
LOOP_PERIODS = 24
#: A closed-form gap's gas: a fixed part (each stretch of one tariff version and clock offset priced by local
#: half hour; measured ~120k after a week and ~300k after 400 days of time of use) ...
LONG_GAP_GAS = 1_000_000
#: ... and a part per half hour, for day-ahead prices published throughout the gap on both sides (each its
#: own price: measured ~1,550 gas a half hour). The gateway cannot see what was published, so it assumes it.
GAS_PER_GAP_PERIOD = 2_000
RECORD_BYTES = 104
#: The most gas a batch's bound may ask for: well inside a 30M-gas block, so a batch of readings after
#: long gaps is cut short rather than refused by the node.
MAX_BATCH_GAS = 25_000_000
#: The most one reading's gap is bounded at (whole extra periods' worth): a reading after any silence goes,
#: alone if need be.
MAX_GAP_GAS = (MAX_BATCH_GAS - BATCH_BASE_GAS - GAS_PER_READING) // GAS_PER_EXTRA_PERIOD * GAS_PER_EXTRA_PERIOD
SUBMIT_READINGS_SELECTOR = keccak(text="submitReadings(bytes)")[:4]
_HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


def gap_gas(start: int, end: int) -> int:
    """The gas of pricing a reading's interval [start, end) beyond its first settlement period: per period
    for a short gap, the closed form's bound (``LONG_GAP_GAS`` + ``GAS_PER_GAP_PERIOD`` a period, at most
    ``MAX_GAP_GAS``) for one of more than ``LOOP_PERIODS``."""
    if end <= start:
        return 0
    extra = (end - 1) // PERIOD_SECONDS - start // PERIOD_SECONDS
    if extra <= LOOP_PERIODS:
        return GAS_PER_EXTRA_PERIOD * extra
    return min(LONG_GAP_GAS + GAS_PER_GAP_PERIOD * extra, MAX_GAP_GAS)


def extra_periods(spans: Iterable[tuple[int, int]]) -> int:
    """What the readings' intervals (previous timestamp, timestamp) cost beyond one period each, in extra
    periods' worth (``GAS_PER_EXTRA_PERIOD``): the periods spanned for a short gap, the closed form's bound
    for a long one (``gap_gas``)."""
    return sum(-(-gap_gas(start, end) // GAS_PER_EXTRA_PERIOD) for start, end in spans)


def gas_limit_for(n: int, extra: int = 0) -> int:
    """The gas limit for ``n`` readings whose gaps cost ``extra`` periods' worth (``extra_periods``; a bound,
    so the node need not estimate each batch)."""
    return BATCH_BASE_GAS + GAS_PER_READING * n + GAS_PER_EXTRA_PERIOD * extra


def compact_signature(signature: str | bytes) -> bytes:
    """The 64-byte EIP-2098 form (r, yParity << 255 | s) of a 65-byte (r, s, v) signature."""
    sig = bytes.fromhex(signature.removeprefix("0x")) if isinstance(signature, str) else bytes(signature)
    if len(sig) != 65 or sig[64] not in (27, 28):
        raise ValueError("a reading's signature is 65 bytes (r, s, v) with v 27 or 28")
    s = int.from_bytes(sig[32:64], "big")
    if s > _HALF_ORDER:
        raise ValueError("a reading's signature must have a low s (EIP-2)")
    return sig[:32] + ((sig[64] - 27) << 255 | s).to_bytes(32, "big")


def pack_reading(data: ReadingData, signature: str | bytes) -> bytes:
    """One reading's 104-byte record; raises ValueError for values the contract's fields cannot hold."""
    if not (0 <= data.seq <= MAX_SEQ and 0 <= data.timestamp <= MAX_TIMESTAMP):
        raise ValueError(f"seq {data.seq} and timestamp {data.timestamp} must fit 32 bits")
    if not (0 <= data.energy_wh <= MAX_REGISTER_WH and 0 <= data.export_wh <= MAX_REGISTER_WH):
        raise ValueError(f"registers {data.energy_wh} and {data.export_wh} Wh must fit 48 bits")
    return (
        bytes.fromhex(data.meter.removeprefix("0x"))
        + data.seq.to_bytes(4, "big")
        + data.timestamp.to_bytes(4, "big")
        + data.energy_wh.to_bytes(6, "big")
        + data.export_wh.to_bytes(6, "big")
        + compact_signature(signature)
    )


def submit_readings_calldata(signed: Sequence[tuple[ReadingData, str]]) -> bytes:
    """The calldata of ``submitReadings(batch)`` for (reading, 0x-hex 65-byte signature) pairs."""
    batch = b"".join(pack_reading(d, sig) for d, sig in signed)
    return SUBMIT_READINGS_SELECTOR + abi_encode(["bytes"], [batch])
