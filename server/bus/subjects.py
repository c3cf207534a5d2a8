"""The NATS names and payloads the gateways and the cores share: no I/O here.

The reading log is one JetStream stream, ``READINGS``, with a subject per partition and meter
(``sm.readings.<partition>.<meter>``): a core owns whole partitions, so a meter's readings are
taken by one chain writer at a time and in the order they were logged. A reading's message id
is its meter, seq and time, so a publish retried after a lost acknowledgement is dropped by the
stream (``Nats-Msg-Id``), and a meter that restarts its sequence (a register reset) still gets
new ids. The meter bus is core NATS (at most once, as a WebSocket is): each gateway subscribes
to ``sm.meter.<meter>`` for the meters it holds; logins go to ``sm.login`` (a queue group of the
cores), and each core says it is alive on ``sm.core.<id>.alive``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from common.eip712 import ReadingData
from server.endpoint.validation import Cursor

__all__ = ["STREAM", "LEASES", "LOGIN", "RESTARTS", "LoggedReading", "partition_of", "reading_subject",
           "partition_subject", "meter_subject", "core_subject", "core_alive_subject", "message_id",
           "encode_reading", "decode_reading", "dump", "load", "consumer_name"]

STREAM = "READINGS"
#: The key-value bucket of partition leases (``p<n>`` -> the core that owns it) and live cores (``core.<id>``).
LEASES = "sm-leases"
LOGIN = "sm.login"
#: A meter's register and sequence restarted on chain: every gateway moves its cursor.
RESTARTS = "sm.restart"


@dataclass(frozen=True)
class LoggedReading:
    """A reading as the log holds it: the signed fields, the signature and its meter's previous reading's time."""

    data: ReadingData
    signature: str
    prev_timestamp: int

    @property
    def cursor(self) -> Cursor:
        """Where the meter stands once this reading is taken (a refused one moves only the seq, but the chain has
        the last word at the next login: this is the furthest the meter may have got)."""
        d = self.data
        return Cursor(d.seq, d.timestamp, d.energy_wh, d.export_wh)


def partition_of(meter: str, partitions: int) -> int:
    """The partition a meter's readings go to (addresses are uniformly spread: their first bytes will do)."""
    return int(meter.lower().removeprefix("0x")[:8], 16) % partitions


def reading_subject(meter: str, partitions: int) -> str:
    """The subject a meter's readings are published on."""
    return f"sm.readings.{partition_of(meter, partitions)}.{meter.lower()}"


def partition_subject(partition: int) -> str:
    """The subjects of every meter in ``partition``."""
    return f"sm.readings.{partition}.*"


def consumer_name(partition: int) -> str:
    """The durable consumer a partition's owner reads it through."""
    return f"writer-p{partition}"


def meter_subject(meter: str) -> str:
    """Where a meter's bills, alerts and events are published for the gateway holding its connection."""
    return f"sm.meter.{meter.lower()}"


def core_subject(core: str, what: str) -> str:
    """A subject one core serves (``logout``, ``opt_out``)."""
    return f"sm.core.{core}.{what}"


def core_alive_subject(core: str = "*") -> str:
    """Where a core says it is alive (``*``: every core's)."""
    return f"sm.core.{core}.alive"


def message_id(data: ReadingData) -> str:
    """The id the stream de-duplicates a reading by."""
    return f"{data.meter.lower()}:{data.seq}:{data.timestamp}"


def encode_reading(data: ReadingData, signature: str, prev_timestamp: int) -> bytes:
    """A reading as a log message."""
    return dump([data.meter.lower(), data.seq, data.timestamp, data.energy_wh, data.export_wh, signature,
                 prev_timestamp])


def decode_reading(payload: bytes) -> LoggedReading:
    """A log message as a reading; raises ``ValueError`` for anything else."""
    try:
        meter, seq, timestamp, energy_wh, export_wh, signature, prev = json.loads(payload)
        return LoggedReading(ReadingData(str(meter), int(seq), int(timestamp), int(energy_wh), int(export_wh)),
                             str(signature), int(prev))
    except (TypeError, ValueError) as err:
        raise ValueError(f"not a logged reading: {payload[:80]!r}") from err


def dump(value: Any) -> bytes:
    """Compact JSON, the payload of every bus message."""
    return json.dumps(value, separators=(",", ":")).encode()


def load(payload: bytes) -> Any:
    """A bus message's JSON."""
    return json.loads(payload)
