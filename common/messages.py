"""The wire protocol between meters and the gateway: one definition, imported by both sides.

Every message is one JSON text frame holding an object with a ``type``. Field names are
camelCase on the wire (``energyWh``, ``lastSeq``) and snake_case in Python: Python code builds
messages by field name, while ``parse_message`` accepts only the camelCase names. Validation is
strict: wrong types, missing fields, snake_case names, a key twice in one object and, in
meter messages, unknown fields are ``malformed_message`` errors. Server messages ignore
fields they do not know, so the server can add fields for meters that negotiated
``SUBPROTOCOL`` (see "Versions" in docs/protocol.md). Error messages quote the peer's text
escaped and cut short. See docs/protocol.md for every message and error code.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel, to_snake
from pydantic_core import ErrorDetails

from common.dr_terms import Signal, Status, Terms, status_at
from common.errors import MalformedMessage, MessageTooLarge, SmartMeterError
from common.logs import UNTRUSTED_LIMIT, clip, escape

__all__ = [
    "SUBPROTOCOL",
    "SUBPROTOCOLS",
    "protocol_version",
    "Address",
    "HexSignature",
    "Challenge",
    "Auth",
    "Welcome",
    "RateLimit",
    "Reading",
    "Ack",
    "Bill",
    "BillState",
    "TariffInfo",
    "GridAlertMessage",
    "ConsumptionAlert",
    "DemandResponseMessage",
    "OptOut",
    "OptOutWithdrawal",
    "ErrorMessage",
    "Message",
    "parse_message",
    "encode",
    "error_message",
]

#: The WebSocket subprotocol of this version of the protocol (version 5). A meter offers it (and
#: the older ones it can speak); a connection without any is served version 1 (the same messages
#: without the fields added since).
SUBPROTOCOL = "smartmeter.v5"
#: Every subprotocol the server speaks, by version: version 2 added ``welcome.lastUsedSeq``, version 3
#: provisional bills (``bill.final``), version 4 demand response (``demand_response``, ``opt_out``), version 5
#: opt-outs bound to the event's terms (``opt_out.modification``) and their withdrawal (``opt_out_withdrawal``).
SUBPROTOCOLS: dict[str, int] = {"smartmeter.v2": 2, "smartmeter.v3": 3, "smartmeter.v4": 4, "smartmeter.v5": 5}
#: Characters of a key, tag or field name the peer sent that an error message quotes.
QUOTED_LIMIT = 32
UINT64_MAX = 2**64 - 1
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
HexSignature = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{130}$")]
Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")]
Uint64 = Annotated[int, Field(ge=0, le=UINT64_MAX)]
Uint32 = Annotated[int, Field(ge=0, le=2**32 - 1)]


class _Model(BaseModel):
    # Names are allowed so that Python code can build messages by field name; the wire accepts only
    # the camelCase aliases, because parse_message validates with by_name=False.
    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, extra="forbid", strict=True,
        frozen=True,
    )


class _ServerModel(_Model):
    """A server message (or part of one): meters ignore fields they do not know, so the server may add some."""

    model_config = ConfigDict(extra="ignore")


class TariffInfo(_ServerModel):
    """The tariff in force: this period's import and export prices (millipence per kWh) and the
    standing charge (millipence per day)."""

    unit_rate: int
    standing_charge: int
    version: int = 0
    export_rate: int = 0


class BillState(_ServerModel):
    """A meter's open billing period: energy imported and exported (Wh), import cost, export
    credit, standing charge and the amount due (micropence; negative when in credit)."""

    period_id: int
    period_start: int
    period_energy_wh: int
    energy_cost: int
    standing_charge: int
    amount_due: int
    period_export_wh: int = 0
    export_credit: int = 0


# ---------------------------------------------------------------- server -> meter


class Challenge(_ServerModel):
    """Sent on connect: sign ``nonce`` (EIP-712 ``Login``) under ``domain`` before ``expiresAt``."""

    type: Literal["challenge"] = "challenge"
    nonce: Hex32
    expires_at: int
    domain: dict[str, Any]


class RateLimit(_ServerModel):
    """The gateway's limit on a connection's messages: ``per_second`` on average, ``burst`` at once."""

    per_second: float
    burst: int


class Welcome(_ServerModel):
    """Sent after a successful login: the meter's on-chain state, so it can resend what is missing.

    ``last_seq`` is the last seq recorded on chain; ``last_used_seq`` (sent on version 2 connections
    only) the last the gateway used up, so a meter that lost count carries on after it; ``rate_limit``
    (version 2 on) the limit this connection's messages are held to, so a meter paces its resends to it.
    """

    type: Literal["welcome"] = "welcome"
    meter: Address
    account_ref: str
    region: str
    last_seq: int
    last_timestamp: int
    last_energy_wh: int
    bill: BillState
    tariff: TariffInfo
    server_time: int
    #: The export register on chain (0 for a meter that never exported).
    last_export_wh: int = 0
    #: Version 2: the last seq the gateway used up for this meter, accepted or refused for its content (>= last_seq).
    last_used_seq: int | None = None
    #: Version 2 on: the connection's message rate limit (a meter resending a backlog paces itself to it).
    rate_limit: RateLimit | None = None


class Ack(_ServerModel):
    """A reading was accepted into the durable queue (``duplicate`` when it was already there)."""

    type: Literal["ack"] = "ack"
    seq: int
    status: Literal["queued", "duplicate"] = "queued"


class Bill(_ServerModel):
    """The live bill after a reading was recorded on chain (from its ``ReadingRecorded`` event):
    the registers, the open period's import and export, import cost, export credit, standing
    charge and amount due (micropence; negative when in credit), and the tariff of its period.

    ``final`` (version 3): whether the block holding it is final (``CONFIRMATIONS`` deep). A
    provisional bill (``final`` false) may still be undone by a reorganisation; its final one
    follows. Meters of versions 1 and 2 get only final bills, without the field.
    """

    type: Literal["bill"] = "bill"
    meter: Address
    seq: int
    tx_hash: str
    block: int
    energy_wh: int
    period_energy_wh: int
    amount_due: int
    tariff: TariffInfo
    export_wh: int = 0
    period_export_wh: int = 0
    energy_cost: int = 0
    export_credit: int = 0
    standing_charge: int = 0
    #: Version 3: whether the bill's block is final; absent for meters of versions 1 and 2 (final bills only).
    final: bool | None = None


class GridAlertMessage(_ServerModel):
    """A grid alert raised (``active``) or cleared through the chain."""

    type: Literal["grid_alert"] = "grid_alert"
    id: int
    active: bool
    severity: int = 0
    kind: str = ""
    region: str = ""
    message: str = ""
    expires_at: int = 0


class ConsumptionAlert(_ServerModel):
    """Consumption ran high: an hour passed the meter's limit, or power jumped abruptly."""

    type: Literal["consumption_alert"] = "consumption_alert"
    meter: Address
    kind: Literal["hourly_limit", "sudden_jump"]
    message: str
    at: int
    energy_wh: int = 0
    limit_wh: int = 0
    power_w: int = 0


class DemandResponseMessage(_ServerModel):
    """A demand-response event that targets this meter (version 4), as the chain holds it and with this meter's
    part in it: sent when the event is announced, changed (same ``id``, higher ``modification``) or cancelled,
    when the meter's opt-out is recorded and when its credit is, and after login for every event not long over.

    ``status`` is the event's status when the message was sent; it moves with the time alone (far, near at
    ``start - rampUp``, active at ``start``, completed at ``start + duration``), so a meter follows it with
    ``status_now``. ``signalKind`` says what ``signalValue`` is: a level 0-3, or a price in millipence per kWh.
    ``creditRate`` is what a kWh of reduction earns (millipence); ``credit`` the micropence this meter was
    credited, with the ``baselineWh`` and ``actualWh`` it was measured by, once settled.
    """

    type: Literal["demand_response"] = "demand_response"
    id: int
    modification: int
    programme: str
    notice_at: int
    start: int
    duration: int
    ramp_up: int
    signal_kind: Literal["level", "price"]
    signal_value: int
    credit_rate: int
    status: Literal["far", "near", "active", "completed", "cancelled"]
    opted_out: bool = False
    credit: int | None = None
    baseline_wh: int | None = None
    actual_wh: int | None = None

    @property
    def terms(self) -> Terms:
        """The event's terms."""
        return Terms(self.start, self.duration, self.ramp_up, Signal[self.signal_kind.upper()], self.signal_value,
                     self.credit_rate)

    def status_now(self, now: float) -> Status:
        """The event's status at ``now`` (a cancelled event stays cancelled)."""
        return status_at(self.terms, self.status == "cancelled", now)


class ErrorMessage(_ServerModel):
    """Something went wrong: a stable ``code``, a plain-worded ``message``, the reading's ``seq`` if any, or the
    demand-response event's ``eventId`` (version 4) an opt-out was refused for."""

    type: Literal["error"] = "error"
    code: str
    message: str
    seq: int | None = None
    event_id: int | None = None


# ---------------------------------------------------------------- meter -> server


class Auth(_Model):
    """The login answer: the meter's address and its signature of the challenge."""

    type: Literal["auth"] = "auth"
    meter: Address
    nonce: Hex32
    signature: HexSignature


class Reading(_Model):
    """One signed reading of both cumulative registers: ``energyWh`` import, ``exportWh`` export."""

    type: Literal["reading"] = "reading"
    meter: Address
    seq: Uint64
    timestamp: Uint64
    energy_wh: Uint64
    export_wh: Uint64
    signature: HexSignature


class OptOut(_Model):
    """The meter opts out of a demand-response event's terms before it starts: its EIP-712
    ``OptOut(meter, eventId, modification, terms)`` signature under the DemandResponse contract's domain, which
    the gateway relays. ``modification`` (version 5) is the event's modification number the meter signed for;
    an opt-out without it (as version 4 meters send) is refused: the contract no longer takes one."""

    type: Literal["opt_out"] = "opt_out"
    meter: Address
    event_id: Uint64
    signature: HexSignature
    modification: Uint32 | None = None


class OptOutWithdrawal(_Model):
    """The meter withdraws its opt-out of an event's terms before it starts (version 5): its EIP-712
    ``OptOutWithdrawal(meter, eventId, modification, terms)`` signature, which the gateway relays."""

    type: Literal["opt_out_withdrawal"] = "opt_out_withdrawal"
    meter: Address
    event_id: Uint64
    modification: Uint32
    signature: HexSignature


Message = Annotated[
    Union[Challenge, Welcome, Ack, Bill, GridAlertMessage, ConsumptionAlert, DemandResponseMessage, ErrorMessage,
          Auth, Reading, OptOut, OptOutWithdrawal],
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Message)


class _DuplicateKey(Exception):
    """A JSON object of the frame holds a key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Build a JSON object, refusing a key given twice (json.loads would keep the last silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


#: Built once: json.loads with a hook would build a new decoder for every frame.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _quoted(text: object) -> str:
    """Peer-supplied text as an error message shows it: cut short, escaped, in double quotes."""
    return '"' + escape(clip(text, QUOTED_LIMIT)) + '"'


def _path(loc: tuple[int | str, ...]) -> str:
    """Where in the message an error is, with any key the peer made up quoted safely."""
    return ".".join(p if p.isidentifier() and len(p) <= QUOTED_LIMIT else _quoted(p) for p in map(str, loc))


def _describe(errors: list[ErrorDetails]) -> str:
    """A sentence for the first validation error, quoting nothing the peer sent unescaped or unbounded."""
    first = errors[0]
    if first["type"] == "union_tag_invalid":
        ctx = first.get("ctx") or {}
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        return f"unknown message type {_quoted(ctx.get('tag', ''))}; expected one of {expected}"
    loc = first["loc"]
    where = _path(loc) or "message"
    given = first.get("input")
    if first["type"] == "missing" and loc and isinstance(given, dict) and to_snake(str(loc[-1])) in given:
        return f"{where}: field names are camelCase on the wire; send {loc[-1]}, not {to_snake(str(loc[-1]))}"
    return f"{where}: {first.get('msg', 'invalid')}"


def parse_message(raw: str | bytes, max_bytes: int | None = None) -> Any:
    """Parse and validate one frame; raises MalformedMessage or MessageTooLarge with a reason."""
    if max_bytes is not None:
        size = len(raw.encode()) if isinstance(raw, str) else len(raw)
        if size > max_bytes:
            raise MessageTooLarge(f"message of {size} bytes exceeds the limit of {max_bytes}")
    try:
        data = _DECODER.decode(raw.decode() if isinstance(raw, bytes) else raw)
    except _DuplicateKey as err:
        raise MalformedMessage(f"the key {_quoted(err.key)} appears twice in one JSON object") from err
    except (ValueError, UnicodeDecodeError) as err:
        raise MalformedMessage(f"not valid JSON: {err}") from err
    except RecursionError as err:
        raise MalformedMessage("JSON nested too deeply") from err
    if not isinstance(data, dict):
        raise MalformedMessage("a message must be a JSON object with a 'type'")
    seq = data.get("seq") if type(data.get("seq")) is int else None  # not bool, which is an int too
    try:
        return _ADAPTER.validate_python(data, by_alias=True, by_name=False)
    except ValidationError as err:
        raise MalformedMessage(clip(_describe(err.errors(include_url=False)), UNTRUSTED_LIMIT), seq=seq) from err


def protocol_version(subprotocol: str | None) -> int:
    """The protocol version a connection speaks, from the subprotocol its handshake agreed (none: 1)."""
    return SUBPROTOCOLS.get(subprotocol or "", 1)


def encode(message: BaseModel) -> str:
    """Serialise a message for the wire."""
    return message.model_dump_json(by_alias=True, exclude_none=True)


def error_message(err: SmartMeterError) -> ErrorMessage:
    """The wire form of an error."""
    return ErrorMessage(code=err.code, message=err.message, seq=err.seq)
