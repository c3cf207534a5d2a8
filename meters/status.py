"""What a meter shows: its connection state, register, live bill, last problem, last event and alerts.

A plain dataclass updated by the client and rendered by ``display``; also written as JSON to
``status.json`` so ``run-clients.sh`` can show the whole fleet on one screen. A running meter
writes it on every change and at least every ``heartbeat_s`` seconds, so a status older than
``STALE_AFTER_HEARTBEATS`` heartbeats means the meter is stuck or gone, however far apart its
readings are.

The last problem holds only what went wrong (a failed connection, a refusal, a rejected reading)
and is cleared once the meter is connected and up to date again; what merely happened
(connected, readings resent) is the last event. ``describe_failure`` turns a communication
failure into the sentence the display shows.
"""

from __future__ import annotations

import enum
import json
import os
import ssl
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from common.errors import SmartMeterError

__all__ = ["LinkState", "MeterStatus", "describe_failure", "describe_sync", "readings_phrase",
           "HEARTBEAT_S", "STALE_AFTER_HEARTBEATS"]

#: Seconds between status writes of a running meter when nothing changes.
HEARTBEAT_S = 10.0
#: Heartbeats a running meter may miss before the fleet view calls its status stale.
STALE_AFTER_HEARTBEATS = 3


class LinkState(str, enum.Enum):
    """The meter's connection to the server."""

    STARTING = "starting"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    STOPPED = "stopped"


@dataclass
class MeterStatus:
    """Everything the meter's display shows."""

    name: str
    meter: str
    region: str = ""
    archetype: str = ""
    server: str = ""
    state: LinkState = LinkState.STARTING
    register_wh: int = 0
    export_register_wh: int = 0
    last_seq: int = 0
    last_reading_at: int = 0
    waiting: int = 0
    readings_sent: int = 0
    bills_received: int = 0
    bill_seq: int = 0
    period_energy_wh: int = 0
    period_export_wh: int = 0
    export_credit: int = 0
    amount_due: int = 0
    unit_rate: int = 0
    export_rate: int = 0
    standing_charge: int = 0
    bill_block: int = 0
    #: Whether the bill shown is final (False: provisional, its block may still be replaced).
    bill_final: bool = True
    last_error: str = ""
    last_error_at: float = 0.0
    last_event: str = ""
    last_event_at: float = 0.0
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Demand-response events that target this meter, by id: the last ``demand_response`` message of each.
    dr_events: dict[str, dict[str, Any]] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    demand_factor: float = 1.0
    multiplier: float = 1.0
    heartbeat_s: float = HEARTBEAT_S
    updated_at: float = 0.0

    def error(self, text: str, now: float | None = None) -> None:
        """Record the latest problem (something went wrong) in plain words."""
        self.last_error = text
        self.last_error_at = time.time() if now is None else now

    def note(self, text: str, now: float | None = None) -> None:
        """Record the latest event (something happened that needs no action) in plain words."""
        self.last_event = text
        self.last_event_at = time.time() if now is None else now

    def resolved(self, text: str, now: float | None = None) -> None:
        """The meter is connected and up to date: clear the last problem and note ``text`` as the event."""
        self.last_error, self.last_error_at = "", 0.0
        self.note(text, now)

    def stale(self, now: float | None = None) -> bool:
        """Whether a meter that says it runs has missed ``STALE_AFTER_HEARTBEATS`` status writes."""
        now = time.time() if now is None else now
        if self.state is LinkState.STOPPED:
            return False
        return now - self.updated_at > STALE_AFTER_HEARTBEATS * self.heartbeat_s

    def active_alerts(self, now: float | None = None) -> list[dict[str, Any]]:
        """Alerts still in force, most severe first."""
        now = time.time() if now is None else now
        alive = [a for a in self.alerts.values() if a.get("expires_at", 0) > now]
        return sorted(alive, key=lambda a: (-a.get("severity", 0), a.get("id", 0)))

    def to_json(self) -> str:
        """Serialise for the fleet view."""
        data = asdict(self)
        data["state"] = self.state.value
        return json.dumps(data)

    @staticmethod
    def from_json(text: str) -> MeterStatus:
        """Read a status written by ``to_json`` (fields this version does not know are ignored)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a meter status is a JSON object")
        known = {f.name for f in fields(MeterStatus)}
        data = {k: v for k, v in data.items() if k in known}
        data["state"] = LinkState(data["state"])
        try:
            return MeterStatus(**data)
        except TypeError as err:  # a required field missing
            raise ValueError(str(err)) from err

    def save(self, path: Path) -> None:
        """Write atomically (the fleet view reads it while we write)."""
        self.updated_at = time.time()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)


def _reason(err: BaseException) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"the server's certificate is not trusted ({err.verify_message}); check the CA file"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, (TimeoutError,)):
        return "no answer in time"
    if isinstance(err, ConnectionClosed):
        rcvd = err.rcvd
        if rcvd is None:
            return "the connection dropped without a goodbye"
        if rcvd.code == 1001:
            return "the server is shutting down"
        return f"the server closed it (code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})"
    if isinstance(err, InvalidStatus):
        return f"the server refused the WebSocket upgrade (HTTP {err.response.status_code})"
    if isinstance(err, InvalidURI):
        return "the server URL is not a valid wss:// address"
    if isinstance(err, SmartMeterError):
        return f"{err.message} [{err.code}]"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__


def readings_phrase(count: int) -> str:
    """``no readings``, ``1 reading``, ``3 readings``."""
    return "no readings" if count == 0 else "1 reading" if count == 1 else f"{count} readings"


def describe_failure(err: BaseException, url: str, retry_in: float, waiting: int) -> str:
    """One plain sentence: what failed, why, what the meter does next, what is at stake.

    ``cannot connect to wss://127.0.0.1:8765: connection refused; retrying in 4 s; 3 readings waiting``
    """
    if isinstance(err, SmartMeterError):
        what = f"the server at {url} refused this meter"
    elif isinstance(err, ConnectionClosed):
        what = f"lost the connection to {url}"
    else:
        what = f"cannot connect to {url}"
    seconds = max(1, round(retry_in))
    return f"{what}: {_reason(err)}; retrying in {seconds} s; {readings_phrase(waiting)} waiting"


def describe_sync(url: str, resent: int) -> str:
    """The event once the meter is logged in and has resent what was waiting."""
    if not resent:
        return f"connected to {url}; nothing was waiting to be resent"
    return f"connected to {url}; {readings_phrase(resent)} resent"
