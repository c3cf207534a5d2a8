"""What a meter shows: its connection state, register, live bill, last error and alerts.

A plain dataclass updated by the client and rendered by ``display``; also written as JSON to
``status.json`` so ``run-clients.sh`` can show the whole fleet on one screen. ``describe_failure``
turns a communication failure into the plain words the display shows.
"""

from __future__ import annotations

import enum
import json
import os
import ssl
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from common.errors import SmartMeterError

__all__ = ["LinkState", "MeterStatus", "describe_failure"]


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
    last_seq: int = 0
    last_reading_at: int = 0
    waiting: int = 0
    readings_sent: int = 0
    bills_received: int = 0
    bill_seq: int = 0
    period_energy_wh: int = 0
    amount_due: int = 0
    unit_rate: int = 0
    standing_charge: int = 0
    bill_block: int = 0
    #: Whether the bill shown is final (False: provisional, its block may still be replaced).
    bill_final: bool = True
    last_error: str = ""
    last_error_at: float = 0.0
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    demand_factor: float = 1.0
    multiplier: float = 1.0
    updated_at: float = 0.0

    def error(self, text: str) -> None:
        """Record the latest problem in plain words."""
        self.last_error = text
        self.last_error_at = time.time()

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
        """Read a status written by ``to_json``."""
        data = json.loads(text)
        data["state"] = LinkState(data["state"])
        return MeterStatus(**data)

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
            return "connection lost without a goodbye"
        if rcvd.code == 1001:
            return "the server is shutting down"
        return f"connection closed (code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})"
    if isinstance(err, InvalidStatus):
        return f"the server refused the WebSocket upgrade (HTTP {err.response.status_code})"
    if isinstance(err, InvalidURI):
        return "the server URL is not a valid wss:// address"
    if isinstance(err, SmartMeterError):
        return f"{err.message} [{err.code}]"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror.lower()
    return str(err) or type(err).__name__


def describe_failure(err: BaseException, url: str, retry_in: float, waiting: int) -> str:
    """One plain sentence: what failed, what the meter does next, what is at stake."""
    action = "cannot reach server" if isinstance(err, (OSError, TimeoutError)) and not isinstance(
        err, ConnectionClosed) else "lost the server"
    if isinstance(err, SmartMeterError):
        action = "the server refused this meter"
    readings = "1 reading" if waiting == 1 else f"{waiting} readings"
    return f"{action} at {url}: {_reason(err)}; retrying in {retry_in:.0f} s; {readings} waiting"
