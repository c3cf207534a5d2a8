"""A corpus of hostile inputs sent to a running gateway, each expecting a clear error code.

Each case opens its own connection (logged in where the case needs it), sends something
hostile and records the error code or the close code it got. Meanwhile honest meters keep
sending readings and must keep getting bills; afterwards nothing hostile may be on chain.
Loopback only; every case is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from common.billing import Billing
from common.eip712 import Domain, ReadingData, sign_login
from common.logs import UNTRUSTED_LIMIT
from common.messages import encode
from meters.link import MeterLink, signed_reading

__all__ = ["Case", "CaseResult", "HostileTarget", "CASES", "run_corpus", "format_table", "register_targets"]

FLOOD_MESSAGES = 1_000
CASE_TIMEOUT = 15.0


@dataclass
class HostileTarget:
    """What the corpus attacks: the server and meters registered for the attack."""

    url: str
    ssl_context: ssl.SSLContext
    domain: Domain
    billing: Billing
    victim: LocalAccount
    other: LocalAccount
    inactive: LocalAccount
    #: The victim's state after its one good reading: (seq, timestamp, energy).
    base: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class CaseResult:
    """What one case got."""

    name: str
    expected: str
    got: str

    @property
    def ok(self) -> bool:
        """Whether the server answered as expected."""
        return self.got in self.expected.split("|")


Attack = Callable[[HostileTarget], Awaitable[str]]


@dataclass(frozen=True)
class Case:
    """A named hostile input and the answer it must get (alternatives separated by ``|``)."""

    name: str
    expected: str
    attack: Attack


#: The longest error message the server may send: its bound on quoted peer text, and the cut marker.
MAX_ERROR_MESSAGE = UNTRUSTED_LIMIT + len("...[9999 more characters]")


async def _outcome(ws: ClientConnection, timeout: float = CASE_TIMEOUT) -> str:
    """The first error code the server sends, or ``close:<code>`` if it closes first.

    An error whose message is longer than ``MAX_ERROR_MESSAGE`` or holds an unprintable character
    (the server echoing what it was sent) is ``unbounded echo`` instead of its code.
    """
    try:
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            if msg.get("type") == "error":
                text = str(msg.get("message", ""))
                if len(text) > MAX_ERROR_MESSAGE or not text.isprintable():
                    return f"unbounded echo ({len(text)} characters)"
                return str(msg["code"])
    except ConnectionClosed as closed:
        return f"close:{closed.rcvd.code if closed.rcvd else 'none'}"
    except asyncio.TimeoutError:
        return "no answer"


def _twice(message: str, key: str, value: object) -> str:
    """A JSON object text with ``key`` given a second time, as ``value``."""
    return message[:-1] + f", {json.dumps(key)}: {json.dumps(value)}}}"


#: A log line a hostile ``type`` would forge if the gateway logged it as it came.
FORGED_LINE = "ts=2026-11-24T00:00:00.000Z level=error logger=batcher event=chain_lost"


async def _raw(t: HostileTarget) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(t.url, ssl=t.ssl_context, max_size=None, compression=None)
    return ws, json.loads(await ws.recv())


async def _logged_in(t: HostileTarget, account: LocalAccount | None = None) -> MeterLink:
    link = MeterLink(t.url, t.ssl_context, (account or t.victim).key, t.domain)
    await link.connect()
    return link


async def _send_then_outcome(ws: ClientConnection, payload: str | bytes) -> str:
    try:
        await ws.send(payload)
    except ConnectionClosed as closed:
        return f"close:{closed.rcvd.code if closed.rcvd else 'none'}"
    return await _outcome(ws)


def _before_login(payload: Callable[[HostileTarget, dict[str, Any]], str | bytes]) -> Attack:
    async def attack(t: HostileTarget) -> str:
        ws, challenge = await _raw(t)
        try:
            return await _send_then_outcome(ws, payload(t, challenge))
        finally:
            await ws.close()
    return attack


def _after_login(payload: Callable[[HostileTarget], str | bytes]) -> Attack:
    async def attack(t: HostileTarget) -> str:
        link = await _logged_in(t)
        try:
            assert link.ws is not None
            return await _send_then_outcome(link.ws, payload(t))
        finally:
            await link.close()
    return attack


def _auth(t: HostileTarget, challenge: dict[str, Any], *, meter: LocalAccount | None = None,
          signer: LocalAccount | None = None, nonce: str | None = None) -> str:
    meter = meter or t.victim
    nonce = nonce or challenge["nonce"]
    sig = sign_login((signer or meter).key, t.domain, bytes.fromhex(nonce[2:]))
    return json.dumps({"type": "auth", "meter": meter.address, "nonce": nonce, "signature": sig})


def _reading(t: HostileTarget, seq: int | None = None, ts: int | None = None, wh: int | None = None,
             key: bytes | None = None, domain: Domain | None = None, meter: str | None = None,
             export: int = 0) -> str:
    base_seq, base_ts, base_wh = t.base
    data = ReadingData(meter or t.victim.address, base_seq + 1 if seq is None else seq,
                       base_ts + 60 if ts is None else ts, base_wh + 10 if wh is None else wh, export)
    msg = signed_reading(key or t.victim.key, domain or t.domain, data)
    return encode(msg)


def _with_signature(t: HostileTarget, mutate: Callable[[bytes], bytes]) -> str:
    msg = json.loads(_reading(t))
    raw = bytes.fromhex(msg["signature"][2:])
    msg["signature"] = "0x" + mutate(raw).hex()
    return json.dumps(msg)


def _field(t: HostileTarget, **changes: object) -> str:
    msg = json.loads(_reading(t))
    for key, value in changes.items():
        if value is _DROP:
            msg.pop(key)
        else:
            msg[key] = value
    return json.dumps(msg)


_DROP = object()
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _high_s(sig: bytes) -> bytes:
    s = int.from_bytes(sig[32:64], "big")
    v = 55 - sig[64]  # 27 <-> 28
    return sig[:32] + (_N - s).to_bytes(32, "big") + bytes([v])


async def _replayed_login(t: HostileTarget) -> str:
    ws1, c1 = await _raw(t)
    captured = _auth(t, c1)
    ws2, _ = await _raw(t)
    try:
        await ws2.send(captured)  # the first connection's login, replayed on another
        return await _outcome(ws2)
    finally:
        await ws1.close()
        await ws2.close()


async def _replayed_reading(t: HostileTarget) -> str:
    link = await _logged_in(t)
    try:
        assert link.ws is not None
        good = _reading(t)
        await link.ws.send(good)
        while getattr(await link.recv(timeout=CASE_TIMEOUT), "type", "") != "bill":
            pass
        await link.ws.send(good)  # the same signed reading again, after it was recorded
        return await _outcome(link.ws)
    finally:
        await link.close()


async def _sequence_decrease(t: HostileTarget) -> str:
    link = await _logged_in(t)
    try:
        assert link.ws is not None
        _, ts, wh = t.base
        for seq in (1, 2):
            await link.ws.send(_reading(t, seq=seq, ts=ts + 60 * seq, wh=wh + 10 * seq))
        await link.ws.send(_reading(t, seq=1, ts=ts + 180, wh=wh + 30))  # back to an earlier number
        return await _outcome(link.ws)
    finally:
        await link.close()


#: Readings a case records on purpose before its attack (every other victim must have none).
ALLOWED_RECORDED = {"replayed recorded reading": 1, "sequence decrease": 2}


async def _silent_login(t: HostileTarget) -> str:
    ws, _ = await _raw(t)
    try:
        return await _outcome(ws, timeout=60)
    finally:
        await ws.close()


async def _second_auth(t: HostileTarget) -> str:
    link = await _logged_in(t)
    try:
        assert link.ws is not None
        await link.ws.send(json.dumps({"type": "auth", "meter": t.victim.address, "nonce": "0x" + "00" * 32,
                                       "signature": "0x" + "11" * 65}))
        return await _outcome(link.ws)
    finally:
        await link.close()


async def _flood(t: HostileTarget) -> str:
    """1,000 messages within a second from one logged-in meter: rate limited, then disconnected."""
    link = await _logged_in(t)
    assert link.ws is not None
    codes: set[str] = set()
    closed_with = "open"
    started = time.monotonic()
    try:
        try:
            for i in range(FLOOD_MESSAGES):
                await link.ws.send(_reading(t, seq=0))
                if i % 100 == 99:
                    await asyncio.sleep(max(0.0, (i + 1) / FLOOD_MESSAGES - (time.monotonic() - started)))
        except ConnectionClosed:
            pass  # closed while still sending (a loaded machine sends slower): what came before is still to be read
        while True:
            msg = json.loads(await asyncio.wait_for(link.ws.recv(), CASE_TIMEOUT))
            codes.add(str(msg.get("code", msg.get("type"))))
    except ConnectionClosed as closed:
        closed_with = f"close:{closed.rcvd.code if closed.rcvd else 'none'}"
    except asyncio.TimeoutError:
        pass
    finally:
        await link.close()
    if "rate_limited" in codes:
        return f"rate_limited+{closed_with}"
    return "+".join(sorted(codes)) + f"+{closed_with}"


def _cases() -> list[Case]:
    def other_chain(t: HostileTarget) -> Domain:
        return Domain(t.domain.chain_id + 1, t.domain.verifying_contract)

    def other_contract(t: HostileTarget) -> Domain:
        return Domain(t.domain.chain_id, "0x" + "12" * 20)

    far = 10**9
    before = [
        Case("reading before login", "not_authenticated", _before_login(lambda t, c: _reading(t))),
        Case("malformed JSON before login", "malformed_message", _before_login(lambda t, c: "{not json")),
        Case("binary frame before login", "unsupported_frame", _before_login(lambda t, c: b"\x00\x01\x02")),
        Case("login answering a made-up nonce", "challenge_mismatch",
             _before_login(lambda t, c: _auth(t, c, nonce="0x" + "ab" * 32))),
        Case("login replayed from another connection", "challenge_mismatch", _replayed_login),
        Case("login signed by a stranger", "bad_login_signature",
             _before_login(lambda t, c: _auth(t, c, signer=Account.create()))),
        Case("login for a meter signed by another meter", "bad_login_signature",
             _before_login(lambda t, c: _auth(t, c, signer=t.other))),
        Case("login of an unregistered meter", "unknown_meter",
             _before_login(lambda t, c: _auth(t, c, meter=Account.create()))),
        Case("login of a deactivated meter", "meter_inactive",
             _before_login(lambda t, c: _auth(t, c, meter=t.inactive))),
        Case("login missing its signature", "malformed_message",
             _before_login(lambda t, c: json.dumps({"type": "auth", "meter": t.victim.address, "nonce": c["nonce"]}))),
        Case("login with a numeric address", "malformed_message",
             _before_login(lambda t, c: json.dumps({"type": "auth", "meter": 42, "nonce": c["nonce"],
                                                    "signature": "0x" + "11" * 65}))),
        Case("login with a short signature", "malformed_message",
             _before_login(lambda t, c: json.dumps({"type": "auth", "meter": t.victim.address, "nonce": c["nonce"],
                                                    "signature": "0x1234"}))),
        Case("server message type before login", "unexpected_message",
             _before_login(lambda t, c: '{"type": "ack", "seq": 1}')),
        Case("empty object before login", "malformed_message", _before_login(lambda t, c: "{}")),
        Case("login with its meter given twice", "malformed_message",
             _before_login(lambda t, c: _twice(_auth(t, c), "meter", t.other.address))),
        Case("type forging a log line before login", "malformed_message",
             _before_login(lambda t, c: json.dumps({"type": f"auth\r\n{FORGED_LINE}"}))),
        Case("no login at all", "challenge_expired", _silent_login),
        Case("10 MB message before login", "close:1009", _before_login(lambda t, c: "x" * 10_000_000)),
    ]
    after = [
        Case("malformed JSON", "malformed_message", _after_login(lambda t: '{"type": "reading", ')),
        Case("JSON array", "malformed_message", _after_login(lambda t: "[1, 2, 3]")),
        Case("JSON string", "malformed_message", _after_login(lambda t: '"reading"')),
        Case("JSON null", "malformed_message", _after_login(lambda t: "null")),
        Case("unknown message type", "malformed_message", _after_login(lambda t: '{"type": "teleport"}')),
        Case("missing type", "malformed_message", _after_login(lambda t: _field(t, type=_DROP))),
        Case("missing signature", "malformed_message", _after_login(lambda t: _field(t, signature=_DROP))),
        Case("missing seq", "malformed_message", _after_login(lambda t: _field(t, seq=_DROP))),
        Case("missing exportWh", "malformed_message", _after_login(lambda t: _field(t, exportWh=_DROP))),
        Case("seq as a string", "malformed_message", _after_login(lambda t: _field(t, seq="5"))),
        Case("seq as a float", "malformed_message", _after_login(lambda t: _field(t, seq=1.5))),
        Case("seq as a boolean", "malformed_message", _after_login(lambda t: _field(t, seq=True))),
        Case("negative seq", "malformed_message", _after_login(lambda t: _field(t, seq=-1))),
        Case("energy above 2^64", "malformed_message", _after_login(lambda t: _field(t, energyWh=2**70))),
        Case("NaN timestamp", "malformed_message", _after_login(lambda t: _field(t, timestamp=float("nan")))),
        Case("unknown extra field", "malformed_message", _after_login(lambda t: _field(t, bonus=1))),
        Case("snake_case energy_wh instead of energyWh", "malformed_message",
             _after_login(lambda t: _field(t, energyWh=_DROP, energy_wh=t.base[2] + 10))),
        Case("seq given twice", "malformed_message", _after_login(lambda t: _twice(_reading(t), "seq", t.base[0] + 2))),
        Case("energyWh given twice, the second huge", "malformed_message",
             _after_login(lambda t: _twice(_reading(t), "energyWh", 2**47))),
        Case("type forging a log line with CR LF", "malformed_message",
             _after_login(lambda t: json.dumps({"type": f"reading\r\n{FORGED_LINE}"}))),
        Case("type with U+2028, ESC and NUL", "malformed_message",
             _after_login(lambda t: json.dumps({"type": f"\u2028{FORGED_LINE}\x1b[2J\x00\u2029\x85"}))),
        Case("3,000-character type", "malformed_message",
             _after_login(lambda t: json.dumps({"type": "\x1b[31m" + "y" * 3_000}))),
        Case("3,000-character unknown field name", "malformed_message",
             _after_login(lambda t: _field(t, **{"\u2028" + "k" * 3_000: 1}))),
        Case("address not hex", "malformed_message", _after_login(lambda t: _field(t, meter="0x" + "zz" * 20))),
        Case("deeply nested JSON", "malformed_message", _after_login(lambda t: "[" * 1500 + "]" * 1500)),
        Case("binary frame", "unsupported_frame", _after_login(lambda t: b"\xff" * 64)),
        Case("5 KB message", "message_too_large", _after_login(lambda t: _field(t, pad="x" * 5_000))),
        Case("10 MB message", "close:1009", _after_login(lambda t: "x" * 10_000_000)),
        Case("random signature bytes", "bad_signature",
             _after_login(lambda t: _with_signature(t, lambda s: bytes(64) + b"\x1b"))),
        Case("signature by another meter", "bad_signature", _after_login(lambda t: _reading(t, key=t.other.key))),
        Case("signature for another chain id", "bad_signature",
             _after_login(lambda t: _reading(t, domain=other_chain(t)))),
        Case("signature for another contract", "bad_signature",
             _after_login(lambda t: _reading(t, domain=other_contract(t)))),
        Case("signature with v = 0", "bad_signature",
             _after_login(lambda t: _with_signature(t, lambda s: s[:64] + bytes([s[64] - 27])))),
        Case("malleated high-s signature", "bad_signature", _after_login(lambda t: _with_signature(t, _high_s))),
        Case("truncated signature", "malformed_message",
             _after_login(lambda t: _with_signature(t, lambda s: s[:64]))),
        Case("reading for another meter", "wrong_meter",
             _after_login(lambda t: _reading(t, key=t.other.key, meter=t.other.address, seq=1))),
        Case("replayed recorded reading", "stale_sequence", _replayed_reading),
        Case("sequence gap", "sequence_gap", _after_login(lambda t: _reading(t, seq=t.base[0] + 5))),
        Case("sequence decrease", "stale_sequence", _sequence_decrease),
        Case("sequence zero", "stale_sequence", _after_login(lambda t: _reading(t, seq=0))),
        Case("sequence beyond 32 bits", "out_of_range", _after_login(lambda t: _reading(t, seq=2**32))),
        Case("register beyond 48 bits", "out_of_range", _after_login(lambda t: _reading(t, wh=2**48))),
        Case("export register beyond 48 bits", "out_of_range", _after_login(lambda t: _reading(t, export=2**48))),
        Case("export above the supply limit", "implausible_delta",
             _after_login(lambda t: _reading(t, export=24_000 * 60 // 3_600 + 1))),
        Case("timestamp far in the future", "future_timestamp",
             _after_login(lambda t: _reading(t, ts=int(time.time()) + far // 1000))),
        Case("timestamp far in the past", "stale_timestamp", _after_login(lambda t: _reading(t, ts=1_000))),
        Case("timestamp equal to the last", "stale_timestamp", _after_login(lambda t: _reading(t, ts=t.base[1]))),
        Case("decreasing register", "register_decreased", _after_login(lambda t: _reading(t, wh=t.base[2] - 1))),
        Case("impossible 1 MW jump", "implausible_delta",
             _after_login(lambda t: _reading(t, ts=t.base[1] + 60, wh=t.base[2] + 1_000_000 * 60 // 3600))),
        Case("second login on an open connection", "unexpected_message", _second_auth),
        Case("error message from a meter", "unexpected_message",
             _after_login(lambda t: json.dumps({"type": "error", "code": "x", "message": "y"}))),
        Case("challenge message from a meter", "malformed_message|unexpected_message",
             _after_login(lambda t: json.dumps({"type": "challenge", "nonce": "0x" + "00" * 32, "expiresAt": 1,
                                                "domain": {}}))),
        Case("flood of 1,000 messages a second", "rate_limited+close:1008", _flood),
    ]
    return before + after


CASES: list[Case] = _cases()


async def _honest(link: MeterLink, account: LocalAccount, start: tuple[int, int, int], stop: asyncio.Event,
                  bills: list[int]) -> None:
    """An honest meter: a reading a second, counting the bills it gets."""
    seq, ts, wh = start

    async def reader() -> None:
        while True:
            msg = await link.recv()
            if getattr(msg, "type", "") == "bill":
                bills.append(msg.seq)

    task = asyncio.create_task(reader())
    try:
        while not stop.is_set():
            seq, ts, wh = seq + 1, max(ts + 1, int(time.time()) - 1), wh + 5
            await link.send_reading(ReadingData(account.address, seq, ts, wh))
            await asyncio.sleep(1.0)
        await asyncio.sleep(3.0)  # let the last bills arrive
    finally:
        task.cancel()


OPENING_WH = 10_000


def register_targets(billing: Billing, count: int) -> tuple[list[LocalAccount], int]:
    """Register ``count`` fresh meters (opened a day ago) in one go; returns them and the opening time."""
    accounts = [Account.create() for _ in range(count)]
    opened = int(time.time()) - 86_400
    billing.register_meters([(a.address, b"\x66" * 32, "north", OPENING_WH) for a in accounts], opened)
    return accounts, opened


def _recorded_logs(billing: Billing, meter: str) -> list[Any]:
    """The meter's ``ReadingRecorded`` events on chain."""
    return list(billing.contract.events.ReadingRecorded().get_logs(from_block=billing.deployment.block,
                                                                   argument_filters={"meter": meter}))


async def run_corpus(url: str, ssl_context: ssl.SSLContext, domain: Domain, billing: Billing,
                     honest: int = 2) -> tuple[list[CaseResult], dict[str, int], list[str]]:
    """Run every case, each against a fresh victim meter, while honest meters keep sending.

    Returns the results, the bills each honest meter got, and any hostile reading found on chain
    (every victim must still have no recorded reading but the replay case's one good reading).
    """
    accounts, opened = await asyncio.to_thread(register_targets, billing, len(CASES) + 2 + honest)
    victims, other, inactive, honest_accounts = (accounts[:len(CASES)], accounts[len(CASES)],
                                                 accounts[len(CASES) + 1], accounts[len(CASES) + 2:])
    await asyncio.to_thread(billing.deactivate_meter, inactive.address)
    links = [MeterLink(url, ssl_context, a.key, domain) for a in honest_accounts]
    starts = []
    for link in links:
        w = await link.connect()
        starts.append((w.last_seq, w.last_timestamp, w.last_energy_wh))
    stop = asyncio.Event()
    bills: dict[str, list[int]] = {a.address: [] for a in honest_accounts}
    tasks = [asyncio.create_task(_honest(link, a, st, stop, bills[a.address]))
             for link, a, st in zip(links, honest_accounts, starts, strict=True)]
    results = []
    for case, victim in zip(CASES, victims, strict=True):
        target = HostileTarget(url, ssl_context, domain, billing, victim, other, inactive, (0, opened, OPENING_WH))
        try:
            got = await asyncio.wait_for(case.attack(target), timeout=90)
        except Exception as err:  # noqa: BLE001 - a case that blows up is reported, not fatal
            got = f"exception: {type(err).__name__}: {err}"[:120]
        results.append(CaseResult(case.name, case.expected, got))
    stop.set()
    await asyncio.gather(*tasks)
    for link in links:
        await link.close()
    await asyncio.sleep(2.0)  # anything wrongly queued would be mined by now
    leaked = []
    for case, victim in zip(CASES, victims, strict=True):
        allowed = ALLOWED_RECORDED.get(case.name, 0)
        # Counted by ReadingRecorded events: a meter-signed reading refused for its content now goes to the chain
        # as a recorded refusal (it uses its seq up), so the meter's last seq is no measure of what was recorded.
        recorded = len(await asyncio.to_thread(_recorded_logs, billing, victim.address))
        if recorded != allowed:
            leaked.append(f"{case.name}: victim has {recorded} recorded readings, expected {allowed}")
    return results, {a: len(b) for a, b in bills.items()}, leaked


def format_table(results: list[CaseResult]) -> str:
    """The results as a plain-text table."""
    width = max(len(r.name) for r in results)
    lines = [f"{'case':<{width}}  {'expected':<28}  {'got':<28}  outcome", "-" * (width + 70)]
    for r in results:
        lines.append(f"{r.name:<{width}}  {r.expected:<28}  {r.got:<28}  {'ok' if r.ok else 'UNEXPECTED'}")
    return "\n".join(lines)
