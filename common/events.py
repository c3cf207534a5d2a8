"""Decode the contract's raw logs into named events, for the relay, the indexer and tools."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import event_abi_to_log_topic, to_checksum_address
from web3 import Web3
from web3._utils.events import get_event_data

__all__ = ["ChainEvent", "EventDecoder"]


@dataclass(frozen=True)
class ChainEvent:
    """One decoded contract event with where it happened."""

    name: str
    args: dict[str, Any]
    block: int
    log_index: int
    tx_hash: str

    @property
    def position(self) -> tuple[int, int]:
        """(block, log index): the event's place in the chain's total order."""
        return (self.block, self.log_index)


class EventDecoder:
    """Maps topic0 to the contract's events and decodes logs."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._codec = Web3().codec
        self._by_topic: dict[bytes, dict[str, Any]] = {
            event_abi_to_log_topic(item): item for item in abi if item.get("type") == "event"
        }

    def topic(self, name: str) -> str:
        """The 0x-hex topic0 of the named event."""
        for topic, abi in self._by_topic.items():
            if abi["name"] == name:
                return "0x" + topic.hex()
        raise KeyError(name)

    def decode(self, log: Any) -> ChainEvent | None:
        """Decode a raw log (RPC dict or web3 AttributeDict); None for unknown events."""
        topics = log["topics"]
        if not topics:
            return None
        topic0 = bytes(topics[0]) if not isinstance(topics[0], str) else bytes.fromhex(topics[0].removeprefix("0x"))
        abi = self._by_topic.get(topic0)
        if abi is None:
            return None
        data = get_event_data(self._codec, abi, _normalise(log))
        args = {
            k: (to_checksum_address(v) if isinstance(v, str) and len(v) == 42 else v) for k, v in data["args"].items()
        }
        tx_hash = data["transactionHash"]
        return ChainEvent(
            name=data["event"],
            args=args,
            block=int(data["blockNumber"]),
            log_index=int(data["logIndex"]),
            tx_hash=tx_hash if isinstance(tx_hash, str) else "0x" + bytes(tx_hash).hex(),
        )


def _normalise(log: Any) -> dict[str, Any]:
    """Accept logs with hex-string fields (raw RPC) as well as decoded ones."""
    out = dict(log)
    for key in ("blockNumber", "logIndex", "transactionIndex"):
        if isinstance(out.get(key), str):
            out[key] = int(out[key], 16)
    if isinstance(out.get("data"), str):
        out["data"] = bytes.fromhex(out["data"].removeprefix("0x"))
    out["topics"] = [bytes.fromhex(t.removeprefix("0x")) if isinstance(t, str) else bytes(t) for t in out["topics"]]
    return out
