"""Decode the contract's raw logs into named events, for the relay, the indexer and tools.

Decoding works straight from the ABI (topic0 picks the event, the other topics are its indexed
arguments, the data its others), which costs a fraction of web3's generic log processing: the
gateway decodes two events for every reading it relays. Events whose data holds only static
values (every event but ``GridAlert``) are read word by word; the others go through ``eth_abi``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import event_abi_to_log_topic
from eth_utils.abi import collapse_if_tuple

from common.eip712 import checksum_address
from common.tariff import RejectReason

__all__ = ["BatchOutcome", "ChainEvent", "EventDecoder", "RECORD_FIELDS", "unpack_record"]

#: The fields packed into ``ReadingRecorded``'s ``record`` word: (name, lowest bit, bits).
RECORD_FIELDS = (
    ("seq", 0, 32),
    ("timestamp", 32, 32),
    ("energyWh", 64, 48),
    ("exportWh", 112, 48),
    ("periodImportCost", 160, 48),
    ("periodExportCredit", 208, 47),
)


def unpack_record(record: int) -> dict[str, int]:
    """The named fields of a ``ReadingRecorded`` event's packed ``record`` (see the contract's NatSpec)."""
    return {name: (record >> low) & ((1 << bits) - 1) for name, low, bits in RECORD_FIELDS}


@dataclass(frozen=True)
class ChainEvent:
    """One decoded contract event with where it happened."""

    name: str
    args: dict[str, Any]
    block: int
    log_index: int
    tx_hash: str
    #: The hash of the event's block (empty where the log did not say): which chain it belongs to.
    block_hash: str = ""

    @property
    def position(self) -> tuple[int, int]:
        """(block, log index): the event's place in the chain's total order."""
        return (self.block, self.log_index)


@dataclass(frozen=True)
class BatchOutcome:
    """What one mined ``submitReadings`` transaction decided: its block, readings recorded and rejected, and the
    (lower-case meter, seq) of those refused only because an earlier reading of their meter is missing
    (``SequenceGap``: to be submitted again after it)."""

    block: int
    recorded: int
    rejected: int
    out_of_order: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class _EventShape:
    name: str
    indexed: list[tuple[str, str]]
    data_names: list[str]
    data_types: list[str]
    #: Whether every data value takes exactly one 32-byte word.
    static: bool


_STATIC = re.compile(r"^(u?int\d*|address|bool|bytes([1-9]|[12]\d|3[0-2]))$")


def _bytes(value: Any) -> bytes:
    return bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _topic_value(kind: str, raw: bytes) -> Any:
    if kind == "address":
        return checksum_address(raw[12:])
    if kind.startswith("uint"):
        return int.from_bytes(raw, "big")
    if kind.startswith("int"):
        return int.from_bytes(raw, "big", signed=True)
    if kind == "bool":
        return raw[-1] == 1
    return raw  # bytes32, or the hash of a dynamic value


def _word_value(kind: str, word: bytes) -> Any:
    """A static ABI value from its 32-byte word."""
    if kind.startswith("bytes"):
        return word[: int(kind[5:])]
    return _topic_value(kind, word)


SEQUENCE_GAP_REASON = int(RejectReason.SEQUENCE_GAP)


class EventDecoder:
    """Maps topic0 to the contract's events and decodes logs."""

    def __init__(self, abi: list[dict[str, Any]]) -> None:
        self._by_topic: dict[bytes, _EventShape] = {}
        for item in abi:
            if item.get("type") != "event":
                continue
            inputs = item.get("inputs", [])
            self._by_topic[event_abi_to_log_topic(item)] = _EventShape(  # type: ignore[arg-type]
                name=item["name"],
                indexed=[(i["name"], i["type"]) for i in inputs if i.get("indexed")],
                data_names=[i["name"] for i in inputs if not i.get("indexed")],
                data_types=[collapse_if_tuple(i) for i in inputs if not i.get("indexed")],
                static=all(_STATIC.match(i["type"]) for i in inputs if not i.get("indexed")),
            )
        by_name = {shape.name: topic for topic, shape in self._by_topic.items()}
        self._reading_topics = (by_name.get("ReadingRecorded"), by_name.get("ReadingRejected"))

    def topic(self, name: str) -> str:
        """The 0x-hex topic0 of the named event."""
        for topic, shape in self._by_topic.items():
            if shape.name == name:
                return "0x" + topic.hex()
        raise KeyError(name)

    def decode(self, log: Any) -> ChainEvent | None:
        """Decode a raw log (RPC dict or web3 AttributeDict); None for unknown events."""
        topics = [_bytes(t) for t in log["topics"]]
        if not topics:
            return None
        shape = self._by_topic.get(topics[0])
        if shape is None or len(topics) != len(shape.indexed) + 1:
            return None
        args: dict[str, Any] = {
            name: _topic_value(kind, raw) for (name, kind), raw in zip(shape.indexed, topics[1:], strict=True)
        }
        data = _bytes(log["data"])
        if shape.static:
            if len(data) < 32 * len(shape.data_types):
                return None
            for i, (name, kind) in enumerate(zip(shape.data_names, shape.data_types, strict=True)):
                args[name] = _word_value(kind, data[32 * i: 32 * i + 32])
        else:
            values = abi_decode(shape.data_types, data)
            for name, kind, value in zip(shape.data_names, shape.data_types, values, strict=True):
                if kind == "address":
                    value = checksum_address(bytes.fromhex(value[2:]))
                args[name] = list(value) if isinstance(value, tuple) else value
        if shape.name == "ReadingRecorded" and "record" in args:
            args.update(unpack_record(int(args["record"])))
        return ChainEvent(
            name=shape.name,
            args=args,
            block=_int(log["blockNumber"]),
            log_index=_int(log["logIndex"]),
            tx_hash="0x" + _bytes(log["transactionHash"]).hex(),
            block_hash="0x" + _bytes(log["blockHash"]).hex() if log.get("blockHash") else "",
        )

    def batch_outcomes(self, logs: list[Any]) -> dict[str, BatchOutcome]:
        """The reading outcomes in raw logs, by lower-case 0x transaction hash.

        The contract emits ``ReadingRecorded`` or ``ReadingRejected`` for every reading of a batch
        and a reverted transaction emits nothing, so a transaction found here was mined and
        decided every reading in it.
        """
        recorded, rejected = self._reading_topics
        counts: dict[str, list[int]] = {}
        gaps: dict[str, list[tuple[str, int]]] = {}
        for log in logs:
            topics = log["topics"]
            if not topics:
                continue
            topic0 = _bytes(topics[0])
            if topic0 != recorded and topic0 != rejected:
                continue
            tx = "0x" + _bytes(log["transactionHash"]).hex()
            entry = counts.setdefault(tx, [_int(log["blockNumber"]), 0, 0])
            entry[1 if topic0 == recorded else 2] += 1
            if topic0 == rejected:
                data = _bytes(log["data"])
                if int.from_bytes(data[32:64], "big") == SEQUENCE_GAP_REASON and len(topics) > 1:
                    meter = "0x" + _bytes(topics[1])[12:].hex()
                    gaps.setdefault(tx, []).append((meter, int.from_bytes(data[:32], "big")))
        return {tx: BatchOutcome(block, recorded_n, rejected_n, tuple(gaps.get(tx, ())))
                for tx, (block, recorded_n, rejected_n) in counts.items()}
