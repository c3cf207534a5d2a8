"""The meters' endpoint: a TLS WebSocket server that logs meters in and queues their readings.

Thin asyncio code around the protocol core (``session``, ``validation``): it reads frames,
enforces the limits (message size, rate, authentication time, queue bound), looks meters up
on chain, commits accepted readings to the durable store before answering ``ack``, and
registers logged-in meters with the hub so the relay can reach them. What it needs of the rest
of the server (the tariff, the final block, alerts and events at login, opt-outs, waking the
batcher) it asks of an ``Upstream``: the parts of its own process, or, for a gateway on the bus
(``BUS_URL``, ``GATEWAY_WORKERS``), the cores over NATS (``server.bus.gateway_link``).

Accepted readings are committed in groups: every reading taken (and every cursor moved) in one
turn of the event loop goes into one SQLite transaction at the end of it, and only then are the
replies to those meters sent, in order. Under load a turn holds hundreds of readings, and one
commit for them all costs what one did for each. On the bus a turn's readings are published to
the reading log together, and its replies sent once the stream holds them all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from common import errors
from common.billing import decode_bill, decode_meter
from common.chain import AsyncChainClient
from common.deployment import Deployment
from common.eip712 import ReadingData, recover_reading_signer
from common.logs import clip, log_event
from common.messages import (
    SUBPROTOCOLS,
    Ack,
    Auth,
    OptOut,
    OptOutWithdrawal,
    RateLimit,
    Reading,
    Welcome,
    encode,
    error_message,
    parse_message,
    protocol_version,
)
from common.settings import Settings
from server import metrics
from server.bus.hub import Hub
from server.endpoint.ratelimit import TokenBucket
from server.endpoint.session import GOING_AWAY, POLICY_VIOLATION, Session
from server.endpoint.upstream import Upstream
from server.endpoint.validation import Cursor, Limits, validate_reading
from server.relay.dr_relay import BOUND_OPT_OUT_VERSION, DR_VERSION
from server.writer.store import Store

if TYPE_CHECKING:
    from server.bus.reading_log import BusLog

__all__ = ["Gateway"]

log = logging.getLogger("gateway")

#: Frames above this are refused by the WebSocket layer itself (close 1009) before we parse them.
HARD_FRAME_LIMIT_FACTOR = 16
#: Messages dropped for rate limiting before the connection is closed as abusive...
FLOOD_CLOSE_AFTER = 200
#: ...counted since the last quiet spell of this many seconds without a dropped message (a message let
#: through now and then by the refilling bucket does not start the count again).
FLOOD_QUIET_SECONDS = 5.0
#: Refusals that leave the meter's sequence where it was (nothing about the reading was judged).
_SEQUENCE_KEEPING_ERRORS = (errors.WrongMeter, errors.OutOfRange, errors.StaleSequence, errors.SequenceGap,
                            errors.BadSignature)
#: Close code when the server cannot serve now (the chain is unreachable).
TRY_AGAIN_LATER = 1013
#: Concurrent on-chain look-ups during logins (bounds load on the node during reconnect storms).
LOGIN_LOOKUPS = 32
#: Close code when the server failed to store what a meter sent.
INTERNAL_ERROR = 1011


def _select_subprotocol(ws: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """Speak the newest version a meter offers, version 1 (no subprotocol) with one that offers none we know."""
    known = [p for p in offered if p in SUBPROTOCOLS]
    return Subprotocol(max(known, key=lambda p: SUBPROTOCOLS[p])) if known else None


@dataclass(frozen=True)
class _Staged:
    """A reply held for the turn's commit, with the reading (and signature) it acknowledges."""

    meter: str
    ws: ServerConnection
    #: The reading, its signature and its meter's previous reading's time.
    reading: tuple[ReadingData, str, int] | None
    reply: str
    #: The reading was refused for its content: it is queued only so that the chain records the refusal.
    refused: bool = False


class Gateway:
    """Accepts meter connections and turns their readings into queued, validated chain input."""

    def __init__(
        self,
        settings: Settings,
        deployment: Deployment,
        chain: AsyncChainClient,
        store: Store | BusLog,
        hub: Hub,
        upstream: Upstream,
        ssl_context: ssl.SSLContext,
        reuse_port: bool = False,
    ) -> None:
        """``store``: the queue in SQLite (one machine), or the reading log on the bus (a stateless gateway)."""
        self.settings = settings
        self.deployment = deployment
        self.chain = chain
        self.store = store
        self.hub = hub
        self.upstream = upstream
        self.ssl_context = ssl_context
        #: Listen with SO_REUSEPORT, beside the other worker processes on the same port.
        self.reuse_port = reuse_port
        self.domain = deployment.domain
        self.domain_separator = self.domain.separator()
        self.limits = Limits(settings.max_power_w, settings.max_future_skew)
        self.cursors: dict[str, Cursor] = {}
        #: This turn of the loop: replies held for its commit (with the readings they acknowledge), the
        #: signatures of those readings, and the cursors it moved as they were before.
        self._staged: list[_Staged] = []
        self._staged_signatures: dict[tuple[str, int], str] = {}
        self._cursors_before: dict[str, Cursor] = {}
        self.server: Server | None = None
        self._lookups = asyncio.Semaphore(LOGIN_LOOKUPS)
        #: Turns being logged on the bus (their replies wait for the stream's acknowledgement), and their readings.
        self._logging: set[asyncio.Task[None]] = set()
        self._being_logged: set[tuple[str, int]] = set()
        self.stats = {"connections": 0, "logins": 0, "login_failures": 0, "readings": 0, "rejected": 0}

    async def start(self) -> Server:
        """Start listening on the configured host and port."""
        self.server = await serve(
            self._handle,
            self.settings.server_host,
            self.settings.server_port,
            ssl=self.ssl_context,
            max_size=self.settings.max_message_bytes * HARD_FRAME_LIMIT_FACTOR,
            max_queue=16,
            ping_interval=self.settings.ping_interval,
            ping_timeout=self.settings.ping_timeout,
            close_timeout=5,
            compression=None,
            select_subprotocol=_select_subprotocol,
            reuse_port=self.reuse_port or None,
        )
        log_event(log, "gateway_listening", url=self.settings.server_url)
        return self.server

    def serving(self) -> tuple[int, int]:
        """The processes meant to serve the meters' port (this one), and how many do (for ``/health``)."""
        return 1, int(self.server is not None and self.server.is_serving())

    async def close(self) -> None:
        """Stop accepting, close every connection with 1001 (going away)."""
        if self.server is not None:
            self.server.close(close_connections=False)
            if self._logging:  # turns being logged on the bus: their meters get their replies first
                await asyncio.wait(set(self._logging), timeout=15)
            await self.hub.close_all(GOING_AWAY, "server shutting down")
            for conn in list(self.server.connections):
                await conn.close(GOING_AWAY, "server shutting down")
            await self.server.wait_closed()

    # ---------------------------------------------------------------- connection

    async def _handle(self, ws: ServerConnection) -> None:
        peer = f"{ws.remote_address[0]}:{ws.remote_address[1]}" if ws.remote_address else "?"
        self.stats["connections"] += 1
        session = Session(self.domain, self.settings.challenge_ttl)
        log_event(log, "connection_opened", peer=peer)
        meter: str | None = None
        try:
            await ws.send(encode(session.challenge(time.time())))
            meter = await self._login(ws, session, peer)
            if meter is None:
                return
            await self._serve(ws, session, meter)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            unexpected = code not in (1000, 1001)
            log_event(log, "connection_lost" if unexpected else "connection_closed",
                      logging.WARNING if unexpected else logging.INFO,
                      peer=peer, meter=meter, code=code if code is not None else "none (no close frame)")
        finally:
            session.close()
            if meter is not None:
                self._forget(meter, ws)

    def _forget(self, meter: str, ws: ServerConnection) -> None:
        """A meter's connection went: out of the hub, and the upstream told (unless a newer login replaced it)."""
        if self.hub.remove(meter, ws):
            self.upstream.logout(meter)

    async def _refuse(self, ws: ServerConnection, err: errors.SmartMeterError, peer: str, close: bool) -> None:
        event = "login_failed" if isinstance(err, errors.AuthError) else "message_refused"
        metrics.gateway_counters().logins.labels(outcome=err.code).inc()
        log_event(log, event, logging.WARNING, peer=peer, code=err.code, seq=err.seq, detail=clip(err.message))
        try:
            await ws.send(encode(error_message(err)))
            if close:
                # 1013 "try again later" when the chain is the problem, a policy close otherwise.
                later = isinstance(err, (errors.ChainError, errors.GatewayUnavailable))
                await ws.close(TRY_AGAIN_LATER if later else POLICY_VIOLATION, err.code)
        except ConnectionClosed:
            pass

    async def _login(self, ws: ServerConnection, session: Session, peer: str) -> str | None:
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout=self.settings.auth_timeout)
        except asyncio.TimeoutError:
            await self._refuse(ws, errors.ChallengeExpired("no login within the time allowed"), peer, close=True)
            self.stats["login_failures"] += 1
            return None
        try:
            if isinstance(raw, bytes):
                raise errors.UnsupportedFrame()
            msg = parse_message(raw, self.settings.max_message_bytes)
            if isinstance(msg, Reading):
                raise errors.NotAuthenticated("log in before sending readings; the reading was refused", seq=msg.seq)
            if not isinstance(msg, Auth):
                raise errors.UnexpectedMessage(f"expected 'auth', got '{msg.type}'")
            address = session.begin_auth(msg, time.time())
            async with self._lookups:
                raw_state = await self.chain.view("meterState", address)
            view = latest = decode_meter(address, raw_state)
            meter = session.complete_auth(view)
        except errors.SmartMeterError as err:
            self.stats["login_failures"] += 1
            await self._refuse(ws, err, peer, close=True)
            return None
        version = protocol_version(ws.subprotocol)
        replaced = self.hub.add(meter, view.region, ws, version)
        if replaced is not None:
            log_event(log, "connection_replaced", meter=meter)
            asyncio.get_running_loop().create_task(replaced.outlet.close(1000, "replaced by a newer login"))
        # Read the state for welcome only now that events for this meter are held for it. The welcome tells the
        # final state (what no reorganisation can undo), so that the meter drops only readings final on chain.
        try:
            context = await self.upstream.login(meter, view.region, version)
            final_at = context.final_at
            async with self._lookups:
                try:
                    raw_state, raw_bill = await asyncio.gather(
                        self.chain.view("meterState", meter, block=final_at),
                        self.chain.view("openBill", meter, block=final_at),
                    )
                    view = decode_meter(meter, raw_state)
                except errors.ChainError as err:
                    if final_at == "latest" or isinstance(err, errors.ChainUnavailable):
                        raise
                    # Registered in a block not final yet: none of its readings is final either.
                    raw_bill = await self.chain.view("openBill", meter)
                    view = dataclasses.replace(latest, last_seq=0)
            bill = decode_bill(raw_bill)
            if final_at == "latest":
                latest = view
        except errors.SmartMeterError as err:
            self._forget(meter, ws)
            await self._refuse(ws, err, peer, close=True)
            return None
        # The furthest of: the chain's (readings recorded but not final yet count), the store's, and the one in
        # memory, which is ahead of the store while a previous connection's readings wait for this turn's commit.
        on_chain = Cursor(latest.last_seq, latest.last_timestamp, latest.last_energy_wh, latest.last_export_wh)
        if isinstance(self.store, Store):
            logged = self.store.cursor(meter)
        else:  # the meter's last reading still in the log, unless the chain restarted the meter since
            try:
                logged = await self.store.last_logged(meter)
            except errors.SmartMeterError as err:
                self._forget(meter, ws)
                await self._refuse(ws, err, peer, close=True)
                return None
            if logged is not None and logged.timestamp < on_chain.timestamp:
                logged = None
        known = (logged, on_chain, self.cursors.get(meter.lower()))
        cursor = max((c for c in known if c is not None), key=lambda c: c.seq)
        self.cursors[meter.lower()] = cursor
        welcome = Welcome(
            meter=meter,
            account_ref=view.account_ref,
            region=view.region,
            last_seq=view.last_seq,
            last_timestamp=view.last_timestamp,
            last_energy_wh=view.last_energy_wh,
            last_export_wh=view.last_export_wh,
            bill=bill,
            tariff=context.tariff,
            server_time=int(time.time()),
            # The last seq used up, accepted or refused for its content: only meters that speak version 2
            # expect it (version 1 meters refuse a field they do not know).
            last_used_seq=cursor.seq if version >= 2 else None,
            # The limit ``_serve`` holds this connection to, so that a meter resending a backlog paces itself to
            # it instead of losing readings to it (version 2 on: meters of version 1 refuse unknown fields).
            rate_limit=RateLimit(per_second=self.settings.rate_limit_per_second,
                                 burst=self.settings.rate_limit_burst) if version >= 2 else None,
        )
        await ws.send(encode(welcome))
        for message in context.preface:
            await ws.send(message)
        self.hub.release(meter)
        self.stats["logins"] += 1
        metrics.gateway_counters().logins.labels(outcome="ok").inc()
        log_event(log, "login", peer=peer, meter=meter, last_seq=view.last_seq, last_used_seq=cursor.seq,
                  region=view.region, protocol=f"v{version}")
        return meter

    async def _serve(self, ws: ServerConnection, session: Session, meter: str) -> None:
        bucket = TokenBucket(self.settings.rate_limit_per_second, self.settings.rate_limit_burst)
        version = protocol_version(ws.subprotocol)
        dropped = 0
        last_drop = 0.0
        async for raw in ws:
            now = time.monotonic()
            if dropped and now - last_drop > FLOOD_QUIET_SECONDS:
                dropped = 0
            if not bucket.allow(now):
                dropped += 1
                last_drop = now
                metrics.gateway_counters().refused.labels(code=errors.RateLimited.code).inc()
                if dropped == 1:
                    self._reply_error(meter, errors.RateLimited(
                        f"more than {self.settings.rate_limit_per_second:g} messages a second; "
                        "messages are being dropped"))
                if dropped >= FLOOD_CLOSE_AFTER:
                    log_event(log, "flood_disconnected", logging.WARNING, meter=meter, dropped=dropped)
                    # Said directly: the hub's queue for this meter may not have drained during the flood.
                    await ws.send(encode(error_message(errors.RateLimited(
                        f"{dropped} messages dropped for flooding; disconnected"))))
                    await ws.close(POLICY_VIOLATION, "rate_limited")
                    return
                continue
            try:
                reply = self._on_message(raw, session, meter, ws, version)
            except errors.SmartMeterError as err:
                self.stats["rejected"] += 1
                metrics.gateway_counters().refused.labels(code=err.code).inc()
                log_event(log, "reading_refused" if isinstance(err, errors.ReadingError) else "message_refused",
                          logging.WARNING, meter=meter, code=err.code, seq=err.seq, detail=clip(err.message))
                if self._commit_due():
                    self._stage(_Staged(meter, ws, None, encode(error_message(err))))  # after this turn's acks
                else:
                    self._reply_error(meter, err)
                continue
            if reply is not None:
                self.hub.send(meter, reply)

    def _reply_error(self, meter: str, err: errors.SmartMeterError) -> None:
        self.hub.send(meter, encode(error_message(err)))

    def _on_message(self, raw: Any, session: Session, meter: str, ws: ServerConnection, version: int = 1) -> str | None:
        """Handle one frame from a logged-in meter; returns the reply (None: it follows the commit) or raises."""
        if isinstance(raw, bytes):
            raise errors.UnsupportedFrame()
        msg = parse_message(raw, self.settings.max_message_bytes)
        if isinstance(msg, Auth):
            raise errors.UnexpectedMessage("already logged in on this connection")
        if isinstance(msg, OptOutWithdrawal) and version < BOUND_OPT_OUT_VERSION:
            raise errors.UnexpectedMessage(f"'{msg.type}' is a message of protocol version 5 (smartmeter.v5)")
        if isinstance(msg, (OptOut, OptOutWithdrawal)) and version >= DR_VERSION:
            peer = self.hub.peers.get(meter.lower())
            return self.upstream.opt_out(msg, meter, peer.region if peer is not None else "")
        if not isinstance(msg, Reading):
            raise errors.UnexpectedMessage(f"meters may send 'reading' here, not '{msg.type}'")
        session.require_open()
        key = meter.lower()
        cursor = self.cursors[key]
        if msg.seq <= cursor.seq and msg.meter.lower() == key:
            staged = self._staged_signatures.get((key, msg.seq))
            if staged is not None and staged.lower() == msg.signature.lower():  # resent within this turn
                self._stage(_Staged(meter, ws, None, encode(Ack(seq=msg.seq, status="duplicate"))))
                return None
            queued = self.store.get(meter, msg.seq)
            # Still queued and not yet final on chain: the meter resent it before its final bill came back.
            # (The batcher drops a reading from the queue a moment after its block is final.)
            if (queued is not None and queued.signature.lower() == msg.signature.lower()
                    and not self.upstream.settled(meter, msg.seq)):
                return encode(Ack(seq=msg.seq, status="duplicate"))
            if not isinstance(self.store, Store) and (key, msg.seq) in self._being_logged:
                return None  # its ack follows once the log has it
            if not isinstance(self.store, Store) and self._signed_by_meter(msg):
                # On the bus: the log took every seq up to the cursor (a meter's seqs are logged in an unbroken run),
                # so a resend signed by the meter is one the log holds, or the chain has already.
                return encode(Ack(seq=msg.seq, status="duplicate"))
        if self.store.count() >= self.settings.max_pending_readings:
            raise errors.Overloaded("the server's queue is full; keep the reading and retry shortly", seq=msg.seq)
        try:
            data: ReadingData = validate_reading(
                msg, meter, cursor, now=int(time.time()), domain_separator=self.domain_separator, limits=self.limits
            )
        except _SEQUENCE_KEEPING_ERRORS:
            raise
        except errors.ReadingError as err:
            # A signed reading refused for its content uses up its sequence number, so the meter drops it and carries
            # on with the next. It still goes to the chain, which records the refusal (the contract takes a meter's
            # readings in an unbroken sequence, so the gateway cannot leave one out); the meter is told now.
            data = ReadingData(msg.meter, msg.seq, msg.timestamp, msg.energy_wh, msg.export_wh)
            self.stats["rejected"] += 1
            self._move_cursor(key, Cursor(msg.seq, cursor.timestamp, cursor.energy_wh, cursor.export_wh))
            self._stage(_Staged(meter, ws, (data, msg.signature, cursor.timestamp), encode(error_message(err)),
                                refused=True))
            self._staged_signatures[(key, data.seq)] = msg.signature
            metrics.gateway_counters().refused.labels(code=err.code).inc()
            log_event(log, "reading_refused", logging.WARNING, meter=meter, code=err.code, seq=msg.seq,
                      detail=clip(err.message), on_chain="the refusal is recorded with the next batch")
            return None
        self._move_cursor(key, Cursor(data.seq, data.timestamp, data.energy_wh, data.export_wh))
        self._stage(_Staged(meter, ws, (data, msg.signature, cursor.timestamp), encode(Ack(seq=msg.seq))))
        self._staged_signatures[(key, data.seq)] = msg.signature
        return None

    def _signed_by_meter(self, msg: Reading) -> bool:
        """Whether a reading's signature recovers to its meter."""
        data = ReadingData(msg.meter, msg.seq, msg.timestamp, msg.energy_wh, msg.export_wh)
        signer = recover_reading_signer(self.domain_separator, data, msg.signature)
        return signer is not None and signer.lower() == msg.meter.lower()

    def _commit_due(self) -> bool:
        """Whether this turn has something to commit (replies to its meters wait for it)."""
        return bool(self._staged or self._cursors_before)

    def _schedule_commit(self) -> None:
        if not self._commit_due():
            asyncio.get_running_loop().call_soon(self._commit)

    def restarted(self, meter: str, cursor: Cursor) -> None:
        """A relay listener: the chain restarted ``meter``'s register and sequence (a register reset, or a new meter
        in an exchange), so its cursor starts again from ``cursor`` (seq 0), in memory and in the store."""
        key = meter.lower()
        dropped = self.store.restart_cursor(key, cursor)
        if key in self.cursors:
            self.cursors[key] = cursor
        if key in self._cursors_before:
            self._cursors_before[key] = cursor
        log_event(log, "cursor_restarted", meter=meter, timestamp=cursor.timestamp, dropped=dropped)

    def _move_cursor(self, key: str, cursor: Cursor) -> None:
        """Move a meter's cursor now; it is stored with this turn's commit."""
        self._schedule_commit()
        self._cursors_before.setdefault(key, self.cursors[key])
        self.cursors[key] = cursor

    def _stage(self, item: _Staged) -> None:
        """Hold a reply (and the reading it acknowledges) for this turn's commit."""
        self._schedule_commit()
        self._staged.append(item)

    def _commit(self) -> None:
        """Store the turn's readings and cursors in one transaction, then send the replies in order."""
        staged, self._staged = self._staged, []
        before, self._cursors_before = self._cursors_before, {}
        self._staged_signatures.clear()
        readings = [item.reading for item in staged if item.reading is not None]
        if not isinstance(self.store, Store):
            task = asyncio.get_running_loop().create_task(self._log_turn(self.store, staged, before, readings))
            self._logging.add(task)
            task.add_done_callback(self._logging.discard)
            return
        try:
            self.store.put(readings, {key: self.cursors[key] for key in before})
        except sqlite3.Error as err:
            # Nothing of the turn was stored, so nothing is acknowledged: the cursors go back to where
            # they were, and the meters' connections are closed so that they reconnect and resend.
            self._not_stored(staged, before, len(readings), str(err),
                             "the meters were disconnected and will resend; check the disk and data directory")
            return
        self._reply(staged, readings)

    async def _log_turn(self, bus_log: BusLog, staged: list[_Staged], before: dict[str, Cursor],
                        readings: list[tuple[ReadingData, str, int]]) -> None:
        """Log a turn's readings on the bus, then send its replies (or, if the log did not take them, close its
        meters' connections so that they resend)."""
        keys = {(d.meter.lower(), d.seq) for d, _, _ in readings}
        self._being_logged |= keys
        try:
            await bus_log.append(readings)
        except errors.SmartMeterError as err:
            self._not_stored(staged, before, len(readings), err.message,
                             "the meters were disconnected and will resend; check that the NATS servers run")
            return
        finally:
            self._being_logged -= keys
        self._reply(staged, readings)

    def _not_stored(self, staged: list[_Staged], before: dict[str, Cursor], count: int, error: str,
                    action: str) -> None:
        """Nothing of a turn was stored: its cursors go back, and its meters are disconnected to resend."""
        log_event(log, "readings_not_stored", logging.ERROR, readings=count, error=error[:300], action=action)
        self.cursors.update(before)
        for ws in {id(item.ws): item.ws for item in staged}.values():
            asyncio.get_running_loop().create_task(ws.close(INTERNAL_ERROR, "storage_failed"))

    def _reply(self, staged: list[_Staged], readings: list[tuple[ReadingData, str, int]]) -> None:
        """Send a stored turn's replies in order, and count its readings."""
        for item in staged:
            self.hub.send(item.meter, item.reply)
        if readings:
            accepted = sum(1 for item in staged if item.reading is not None and not item.refused)
            self.stats["readings"] += accepted
            metrics.gateway_counters().accepted.inc(accepted)
            self.upstream.queued(len(readings))
