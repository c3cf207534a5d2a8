"""The ``submitReadings`` call the gateway pays for: its calldata and its gas bound.

One definition for everyone who submits readings: the gateway's batcher, provisioning's
history, the benchmark's raw-chain run and the tests. The calldata is encoded with eth_abi
directly, which costs a fraction of web3's contract-call machinery per batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_abi import encode as abi_encode
from eth_utils import keccak

from common.eip712 import ReadingData

__all__ = ["BATCH_BASE_GAS", "GAS_PER_READING", "gas_limit_for", "submit_readings_calldata"]

#: Gas bound per batch: a fixed part plus a generous per-reading part (measured ~17k per reading).
BATCH_BASE_GAS = 80_000
GAS_PER_READING = 40_000
SUBMIT_READINGS_TYPES = ("(address,uint64,uint64,uint64)[]", "bytes[]")
SUBMIT_READINGS_SELECTOR = keccak(text=f"submitReadings({','.join(SUBMIT_READINGS_TYPES)})")[:4]


def gas_limit_for(n: int) -> int:
    """The gas limit for a batch of ``n`` readings (a bound, so the node need not estimate each batch)."""
    return BATCH_BASE_GAS + GAS_PER_READING * n


def submit_readings_calldata(signed: Sequence[tuple[ReadingData, str]]) -> bytes:
    """The calldata of ``submitReadings(readings, signatures)`` for (reading, 0x-hex signature) pairs."""
    readings = [(bytes.fromhex(d.meter[2:]), d.seq, d.timestamp, d.energy_wh) for d, _ in signed]
    signatures = [bytes.fromhex(sig[2:]) for _, sig in signed]
    return SUBMIT_READINGS_SELECTOR + abi_encode(SUBMIT_READINGS_TYPES, [readings, signatures])
