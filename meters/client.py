"""The meter's runtime: takes readings at random intervals, signs and stores them, delivers them
over the secure link, and keeps its status (bill, connection, errors, alerts) current.

Runs with no user input. Readings go to the on-disk outbox first; delivery retries with
exponential back-off and jitter while the server is unreachable; after every login the meter
drops what the chain already holds for good (``welcome.lastSeq``, the final state), carries on
numbering after the last seq the server used (``welcome.lastUsedSeq``) and resends the rest in
order. A reading leaves the outbox when its final bill arrives or the server rejects it for good;
a provisional bill (its block may still be replaced) is shown as provisional meanwhile.

One delivery loop per connection sends the readings, in seq order, paced to the gateway's rate
limit (``meters.pacer``, from ``welcome.rateLimit``) so that a backlog after an outage goes through
whole on the same connection. A reading the gateway has not acknowledged ``ACK_WAIT`` seconds after
it was sent (dropped by a limit, or refused as ``sequence_gap`` behind a dropped one) is sent again,
for as long as it waits in the outbox, whether or not the meter still takes readings.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from websockets.exceptions import InvalidHandshake, WebSocketException

from common import errors
from common.backoff import Backoff
from common.dr_terms import Status
from common.eip712 import Domain, ReadingData, sign_optout, sign_reading
from common.logs import log_event
from common.messages import (
    Ack,
    Bill,
    ConsumptionAlert,
    DemandResponseMessage,
    ErrorMessage,
    GridAlertMessage,
    OptOut,
    OptOutWithdrawal,
    Reading,
    Welcome,
)
from meters.link import MeterLink
from meters.outbox import MeterPosition, Outbox, OutboxEntry
from meters.response import demand_factor, wants_opt_out
from meters.schedule import IntervalSchedule
from meters.sources import RegisterSource
from meters.status import HEARTBEAT_S, LinkState, MeterStatus, describe_failure, describe_sync

__all__ = ["MeterClient", "DEFINITIVE_CODES", "DEMAND_RESPONSE_FACTOR"]

log = logging.getLogger("meter")

#: Error codes after which a reading is dropped from the outbox: resending cannot succeed.
DEFINITIVE_CODES = frozenset({
    "bad_signature", "wrong_meter", "stale_sequence", "stale_timestamp", "future_timestamp",
    "register_decreased", "implausible_delta", "out_of_range", "period_overflow", "meter_inactive",
    "malformed_message",
})
#: Refusals of an opt-out that asking again cannot change (others, such as the chain being unreachable, can).
DEFINITIVE_OPT_OUT_CODES = frozenset({"opt_out_refused", "bad_signature", "wrong_meter"})
#: Load multiplier while a "reduce usage" grid alert is in force in the meter's region.
DEMAND_RESPONSE_FACTOR = 0.6
REDUCE_USAGE_KIND = "reduce_usage"
MIN_BACKOFF = 1.0
MAX_BACKOFF = 30.0
#: Seconds between resends of readings acknowledged but still waiting for their final bill on a live connection.
RESEND_AFTER = 30.0
#: Seconds after which a reading sent but not acknowledged is sent again (the gateway acknowledges at once).
ACK_WAIT = 5.0
#: Demand-response events a meter keeps (the newest), for its panel and its load's response.
KEEP_EVENTS = 8


class MeterClient:
    """One meter: reading producer and connection manager sharing an outbox and a status."""

    def __init__(
        self,
        *,
        key: bytes,
        domain: Domain,
        url: str | Sequence[str],
        ssl_context: ssl.SSLContext,
        outbox: Outbox,
        source: RegisterSource,
        schedule: IntervalSchedule,
        status: MeterStatus,
        status_path: Path | None = None,
        on_change: Callable[[MeterStatus], None] | None = None,
        time_scale: float = 1.0,
        rng: random.Random | None = None,
        stop_after: int | None = None,
        heartbeat: float = HEARTBEAT_S,
        dr_domain: Domain | None = None,
        opt_out_rate: float = 0.0,
    ) -> None:
        self.key = key
        self.domain = domain
        #: The gateways this meter may use, tried in turn when the one in use fails (``url`` is the one in use).
        self.urls = [url] if isinstance(url, str) else list(url)
        self.url = self.urls[0]
        self.ssl_context = ssl_context
        self.outbox = outbox
        self.source = source
        self.schedule = schedule
        self.status = status
        self.status_path = status_path
        self.on_change = on_change
        self.time_scale = time_scale
        self.rng = rng or random.Random()
        self.stop_after = stop_after
        #: Seconds between status writes when nothing changes: the fleet view tells a stuck meter by their absence.
        self.status.heartbeat_s = heartbeat
        self.taken = 0
        #: Set when ``stop_after`` readings were taken and every one of them was billed or rejected.
        self.finished = asyncio.Event()
        self.link: MeterLink | None = None
        #: The DemandResponse contract's EIP-712 domain (None: the deployment has none; no opt-outs).
        self.dr_domain = dr_domain
        #: Share of demand-response events this household opts out of (drawn once per event).
        self.opt_out_rate = opt_out_rate
        self.events: dict[int, DemandResponseMessage] = {}
        #: Events this meter asked to opt out of, by (id, modification): an opt-out signs one modification of
        #: the event's terms, so a change is decided (and asked) afresh; asked once per run.
        self.opting_out: set[tuple[int, int]] = set()
        #: Events whose opt-out this meter withdrew, by (id, modification): not opted out of again.
        self.withdrawals: set[tuple[int, int]] = set()
        self._background: set[asyncio.Task[None]] = set()
        #: Whether the readings waiting at login were sent on the current connection.
        self._synced = False
        #: Set when there is something for the delivery loop to do (a reading taken, an answer received).
        self._wake = asyncio.Event()
        #: On the current connection: when each reading was last sent, and the readings the gateway acknowledged.
        self._sent_at: dict[int, float] = {}
        self._acked: set[int] = set()
        #: The highest seq sent in this run (readings sent for the first time are counted in the status).
        self._highest_sent = 0

    # ---------------------------------------------------------------- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then close the link and record the stopped state."""
        if self.outbox.needs_resign:
            resigned = self.outbox.resign(lambda data: sign_reading(self.key, self.domain, data))
            log_event(log, "outbox_resigned", meter=self.status.name, readings=resigned,
                      reason="the outbox was written before readings carried exportWh")
        pos = self.outbox.position()
        if pos is not None:
            self.status.last_seq, self.status.register_wh = pos.last_seq, pos.last_energy_wh
            self.status.last_reading_at = pos.last_timestamp
        self.status.server = self.url
        self._changed()
        tasks = [asyncio.create_task(self._produce()), asyncio.create_task(self._connect_loop())]
        if self.status_path is not None:
            tasks.append(asyncio.create_task(self._heartbeat()))
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.link is not None:
            await self.link.close()
        self.status.state = LinkState.STOPPED
        self._changed()
        log_event(log, "meter_stopped", meter=self.status.name, waiting=self.outbox.count())

    def _changed(self) -> None:
        self.status.waiting = self.outbox.count()
        if self.stop_after is not None and self.taken >= self.stop_after and not self.status.waiting:
            self.finished.set()
        if self.status_path is not None:
            self.status.save(self.status_path)
        if self.on_change is not None:
            self.on_change(self.status)

    async def _heartbeat(self) -> None:
        """Write the status at least every ``heartbeat_s`` seconds, changed or not."""
        while True:
            due = self.status.updated_at + self.status.heartbeat_s - time.time()
            if due <= 0:
                self._changed()
                due = self.status.heartbeat_s
            await asyncio.sleep(due)

    # ---------------------------------------------------------------- readings

    async def _produce(self) -> None:
        pos = self.outbox.position()
        since_last = time.time() - pos.last_timestamp if pos else float("inf")
        # The first reading comes as soon as the minimum interval since the last one allows.
        first = max(0.0, self.schedule.min_s - since_last) / self.time_scale
        await asyncio.sleep(first)
        while self.stop_after is None or self.taken < self.stop_after:
            self._expire_alerts()
            self._apply_demand_response()
            if self.take_reading(time.time()) is not None:
                self._wake.set()  # the delivery loop sends it, in order after anything waiting
            await asyncio.sleep(self.schedule.next_delay())

    def take_reading(self, now: float) -> Reading | None:
        """Read the register, sign the reading and commit it to the outbox; None if too soon."""
        pos = self.outbox.position() or MeterPosition(0, 0, 0)
        ts = int(now)
        if ts <= pos.last_timestamp:
            return None
        wh = max(self.source.register_at(now), pos.last_energy_wh)
        exported = max(self.source.export_at(now), pos.last_export_wh)
        data = ReadingData(self.status.meter, pos.last_seq + 1, ts, wh, exported)
        signature = sign_reading(self.key, self.domain, data)
        self.outbox.add(data, signature)
        self.taken += 1
        self.status.last_seq, self.status.register_wh, self.status.last_reading_at = data.seq, wh, ts
        self.status.export_register_wh = exported
        log_event(log, "reading_taken", meter=self.status.name, seq=data.seq, energy_wh=wh, export_wh=exported,
                  waiting=self.outbox.count())
        self._changed()
        return Reading(meter=data.meter, seq=data.seq, timestamp=ts, energy_wh=wh, export_wh=exported,
                       signature=signature)

    def _due(self, resend_all: bool) -> list[OutboxEntry]:
        """The waiting readings to send now, oldest first: those not sent on this connection, those sent
        ``ACK_WAIT`` ago and not acknowledged, and (``resend_all``) those acknowledged but not final yet."""
        now = time.monotonic()
        due = []
        for entry in self.outbox.pending():
            sent = self._sent_at.get(entry.seq)
            if (sent is None or resend_all
                    or (entry.seq not in self._acked and now - sent >= ACK_WAIT)):
                due.append(entry)
        return due

    async def _send_entries(self, link: MeterLink, entries: list[OutboxEntry]) -> int:
        """Send readings of the outbox in order, each paced to the gateway's limit; returns how many."""
        for entry in entries:
            self._acked.discard(entry.seq)
            await link.send(Reading(meter=self.status.meter, seq=entry.seq, timestamp=entry.timestamp,
                                    energy_wh=entry.energy_wh, export_wh=entry.export_wh, signature=entry.signature))
            self._sent_at[entry.seq] = time.monotonic()  # after the pacer's wait: the answer is due from now
            if entry.seq > self._highest_sent:
                self._highest_sent = entry.seq
                self.status.readings_sent += 1
        return len(entries)

    async def _deliver(self, link: MeterLink) -> None:
        """The connection's delivery loop: resend what waited at login, then send each new reading, and again
        what is not acknowledged in time, until the connection ends."""
        self._sent_at, self._acked = {}, set()
        started = time.monotonic()
        resent = await self._send_entries(link, self._due(resend_all=True))
        self._synced = True
        # Connected and up to date: whatever went wrong before is over.
        self.status.resolved(describe_sync(self.url, resent))
        log_event(log, "resent", meter=self.status.name, readings=resent,
                  seconds=f"{time.monotonic() - started:.1f}", paced_s=f"{link.pacer.waited:.1f}" if link.pacer else 0)
        self._changed()
        full_at = time.monotonic()
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=ACK_WAIT / 2)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            resend_all = time.monotonic() - full_at >= RESEND_AFTER
            due = self._due(resend_all)
            if resend_all:
                full_at = time.monotonic()
            again = [e.seq for e in due if e.seq in self._sent_at]
            if again and not resend_all:
                log_event(log, "resending_unacknowledged", logging.WARNING, meter=self.status.name,
                          first_seq=again[0], readings=len(again))
            await self._send_entries(link, due)

    # ---------------------------------------------------------------- connection

    async def _connect_loop(self) -> None:
        backoff = Backoff(MIN_BACKOFF, MAX_BACKOFF, self.rng)
        while True:
            self.status.state = LinkState.CONNECTING
            self._changed()
            link = MeterLink(self.url, self.ssl_context, self.key, self.domain)
            try:
                welcome = await link.connect()
                backoff.succeeded()
                self.link = link
                self._on_welcome(welcome)
                delivery = asyncio.create_task(self._deliver(link))
                delivery.add_done_callback(functools.partial(self._delivery_ended, link=link))
                try:
                    while True:
                        self._on_message(await link.recv())
                finally:
                    delivery.cancel()
                    await asyncio.gather(delivery, return_exceptions=True)
            except asyncio.CancelledError:
                await link.close()
                raise
            except (OSError, asyncio.TimeoutError, WebSocketException, InvalidHandshake,
                    errors.SmartMeterError) as err:
                self.link, self._synced = None, False
                delay = backoff.failed()
                self.status.state = LinkState.DISCONNECTED
                self.status.error(describe_failure(err, self.url, delay, self.outbox.count()))
                log_event(log, "communication_problem", logging.WARNING, meter=self.status.name,
                          detail=self.status.last_error)
                self._fail_over()
                self._changed()
                await asyncio.sleep(delay)

    def _delivery_ended(self, task: asyncio.Task[None], link: MeterLink) -> None:
        """The delivery loop ends only with its connection: if it stopped by itself (a send failed), close the
        connection too, so that the meter reconnects instead of listening on a link it no longer sends on."""
        if task.cancelled():
            return
        err = task.exception()
        if err is not None and not isinstance(err, (WebSocketException, OSError)):
            log_event(log, "delivery_failed", logging.ERROR, meter=self.status.name, error=repr(err)[:200],
                      action="reconnecting")
        self._in_background(link.close())

    def _fail_over(self) -> None:
        """Move to the next gateway of the list (the contract's sequence rule and ``welcome`` keep it exact)."""
        if len(self.urls) < 2:
            return
        failed = self.url
        self.url = self.urls[(self.urls.index(failed) + 1) % len(self.urls)]
        self.status.server = self.url
        log_event(log, "gateway_failover", logging.WARNING, meter=self.status.name, failed=failed, next=self.url)

    def _on_welcome(self, welcome: Welcome) -> None:
        dropped = self.outbox.done_upto(welcome.last_seq)
        pos = self.outbox.position()
        # The gateway's last used seq (version 2) is at least the chain's: a reading refused for its content
        # used up its number before the chain recorded the refusal.
        used = max(welcome.last_seq, welcome.last_used_seq or 0)
        if pos is None or pos.last_timestamp < welcome.last_timestamp or (
                pos.last_seq < welcome.last_seq and pos.last_energy_wh < welcome.last_energy_wh):
            # The chain holds a reading this meter does not remember (its data was lost): carry on from the
            # chain, numbering after the last seq the gateway used. (A chain ahead by numbers alone holds
            # refusals, which use numbers up and leave the registers: only the numbering moves, below.)
            chain_pos = MeterPosition(used, welcome.last_timestamp, welcome.last_energy_wh, welcome.last_export_wh)
            self.outbox.set_position(chain_pos)
            self.source.restart(max(welcome.last_timestamp, time.time()), welcome.last_energy_wh,
                                welcome.last_export_wh)
            self.status.last_seq, self.status.register_wh = chain_pos.last_seq, chain_pos.last_energy_wh
            log_event(log, "position_adopted_from_chain", logging.WARNING, meter=self.status.name,
                      last_seq=welcome.last_seq, last_used_seq=used)
        elif pos.last_seq < used:
            # Numbers were used up that this meter does not remember (it lost track of refused readings): skip
            # them, or its next readings would be refused as stale_sequence.
            self.outbox.set_position(MeterPosition(used, pos.last_timestamp, pos.last_energy_wh, pos.last_export_wh))
            self.status.last_seq = used
            log_event(log, "sequence_adopted_from_server", logging.WARNING, meter=self.status.name,
                      was=pos.last_seq, last_used_seq=used)
        s = self.status
        s.state = LinkState.CONNECTED
        s.region = welcome.region
        s.period_energy_wh, s.amount_due = welcome.bill.period_energy_wh, welcome.bill.amount_due
        s.period_export_wh, s.export_credit = welcome.bill.period_export_wh, welcome.bill.export_credit
        s.bill_seq = welcome.last_seq
        s.unit_rate, s.standing_charge = welcome.tariff.unit_rate, welcome.tariff.standing_charge
        s.export_rate = welcome.tariff.export_rate
        log_event(log, "logged_in", meter=s.name, last_seq=welcome.last_seq, already_on_chain=dropped,
                  resending=self.outbox.count())
        self._changed()

    def _on_message(self, msg: object) -> None:
        s = self.status
        if isinstance(msg, Bill):
            # A provisional bill (version 3: final false) is shown as such, and the reading stays in the outbox
            # until its final bill: a reorganisation could still undo it. A server that predates version 3 sends
            # final bills only, without the field.
            final = msg.final is not False
            self._acked.add(msg.seq)
            if final:
                self.outbox.done(msg.seq)
            if msg.seq > s.bill_seq or (msg.seq == s.bill_seq and final):
                s.bill_seq, s.period_energy_wh, s.amount_due = msg.seq, msg.period_energy_wh, msg.amount_due
                s.period_export_wh, s.export_credit = msg.period_export_wh, msg.export_credit
                s.bill_block, s.bill_final = msg.block, final
                s.unit_rate, s.standing_charge = msg.tariff.unit_rate, msg.tariff.standing_charge
                s.export_rate = msg.tariff.export_rate
            s.bills_received += 1
            log_event(log, "bill", meter=s.name, seq=msg.seq, amount_due=msg.amount_due,
                      period_energy_wh=msg.period_energy_wh, block=msg.block, final=final)
        elif isinstance(msg, ErrorMessage):
            self._on_error(msg)
        elif isinstance(msg, GridAlertMessage):
            key = str(msg.id)
            if msg.active:
                s.alerts[key] = msg.model_dump()
            else:
                s.alerts.pop(key, None)
            self._apply_demand_response()
            log_event(log, "grid_alert", logging.WARNING if msg.active else logging.INFO, meter=s.name, id=msg.id,
                      active=msg.active, kind=msg.kind, severity=msg.severity, message=msg.message)
        elif isinstance(msg, DemandResponseMessage):
            self._on_event(msg)
        elif isinstance(msg, ConsumptionAlert):
            s.notices = (s.notices + [msg.message])[-5:]
            log_event(log, "consumption_alert", logging.WARNING, meter=s.name, kind=msg.kind, message=msg.message)
        elif isinstance(msg, Ack):
            self._acked.add(msg.seq)
            return
        self._changed()

    def _on_error(self, msg: ErrorMessage) -> None:
        s = self.status
        if msg.event_id is not None:
            s.error(f"the opt-out of demand-response event {msg.event_id} was refused: {msg.message} [{msg.code}]")
            if msg.code not in DEFINITIVE_OPT_OUT_CODES:  # the server failed: asked again when the event is next sent
                self.opting_out = {k for k in self.opting_out if k[0] != msg.event_id}
        elif msg.seq is not None and msg.code in DEFINITIVE_CODES:
            self.outbox.done(msg.seq)
            s.error(f"reading #{msg.seq} was rejected: {msg.message} [{msg.code}]")
        elif msg.code == "sequence_gap" and self.link is not None and self._holds_earlier(msg.seq):
            # A reading before this one did not reach the gateway (dropped by a limit): the delivery loop sends it
            # again, and the readings after it, once they go unacknowledged.
            self._wake.set()
        elif msg.code == "sequence_gap" and self.link is not None:
            # The server expects a reading earlier than any this meter holds: reconnect, and ``welcome`` says where
            # the gateway stands.
            self._in_background(self.link.close())
            s.note(f"the server asked for earlier readings first; reconnecting to resend them [{msg.code}]")
        elif msg.code == "rate_limited" and self.link is not None and self.link.pacer is not None:
            self.link.pacer.back_off()  # the gateway counts more than this meter did: pause, then resend the rest
            self._wake.set()
        else:
            s.error(f"{msg.message} [{msg.code}]")
        log_event(log, "server_error", logging.WARNING, meter=s.name, code=msg.code, seq=msg.seq, detail=msg.message)

    def _holds_earlier(self, seq: int | None) -> bool:
        """Whether the outbox holds a reading before ``seq`` (one the gateway may not have received)."""
        first = next(iter(self.outbox.pending()), None)
        return seq is not None and first is not None and first.seq < seq

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task held until done (the loop keeps only a weak reference to a task)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---------------------------------------------------------------- demand response

    def _on_event(self, msg: DemandResponseMessage) -> None:
        """A demand-response event (new, changed, cancelled, or this meter's part in it): keep it, and opt out of
        it if this household does not take part."""
        known = self.events.get(msg.id)
        if known is not None and known.modification > msg.modification:
            return  # an older version of the event, overtaken
        signed = (msg.id, msg.modification)
        if (known is not None and known.modification == msg.modification and known.opted_out and not msg.opted_out
                and signed not in self.withdrawals):
            msg = msg.model_copy(update={"opted_out": True})  # recorded, not yet final when this was sent
        self.events[msg.id] = msg
        for old in sorted(self.events)[:-KEEP_EVENTS]:
            del self.events[old]
        self.status.dr_events = {str(i): e.model_dump() for i, e in self.events.items()}
        now = time.time()
        log_event(log, "demand_response_event", meter=self.status.name, id=msg.id, modification=msg.modification,
                  status=msg.status_now(now).name.lower(), start=msg.start, duration=msg.duration,
                  signal=f"{msg.signal_kind} {msg.signal_value}", opted_out=msg.opted_out,
                  credit=msg.credit)
        # A changed event (higher modification) lapsed any opt-out of its old terms: the same draw decides again.
        if (not msg.opted_out and signed not in self.opting_out and signed not in self.withdrawals
                and wants_opt_out(self.status.meter, msg.id, self.opt_out_rate)):
            self.opt_out(msg.id)
        self._apply_demand_response()

    def opt_out(self, event_id: int | None = None) -> int | None:
        """Opt out of an event (default: the next one not started that this meter takes part in); returns its
        id, or None when there is none or it cannot be sent now."""
        now = time.time()
        chosen = [e for e in self.events.values() if (event_id is None or e.id == event_id) and not e.opted_out
                  and (e.id, e.modification) not in self.opting_out and e.status_now(now) in (Status.FAR, Status.NEAR)]
        if not chosen or self.dr_domain is None or self.link is None:
            return None
        event = min(chosen, key=lambda e: e.start)
        signed = (event.id, event.modification)
        message = OptOut(meter=self.status.meter, event_id=event.id, modification=event.modification,
                         signature=sign_optout(self.key, self.dr_domain, event.id, event.modification, event.terms))
        self.opting_out.add(signed)
        self._send_dr(message, self.opting_out, signed)
        self.status.note(f"opting out of demand-response event {event.id}")
        log_event(log, "opt_out_sent", meter=self.status.name, id=event.id, modification=event.modification)
        return event.id

    def withdraw_opt_out(self, event_id: int | None = None) -> int | None:
        """Withdraw this meter's opt-out of an event not started (default: the next one); the household takes part
        again. Returns the event's id, or None when there is none or it cannot be sent now."""
        now = time.time()
        chosen = [e for e in self.events.values() if (event_id is None or e.id == event_id) and e.opted_out
                  and (e.id, e.modification) not in self.withdrawals and e.status_now(now) in (Status.FAR, Status.NEAR)]
        if not chosen or self.dr_domain is None or self.link is None:
            return None
        event = min(chosen, key=lambda e: e.start)
        signed = (event.id, event.modification)
        message = OptOutWithdrawal(
            meter=self.status.meter, event_id=event.id, modification=event.modification,
            signature=sign_optout(self.key, self.dr_domain, event.id, event.modification, event.terms,
                                  withdrawal=True))
        self.withdrawals.add(signed)
        self._send_dr(message, self.withdrawals, signed)
        self.status.note(f"withdrawing the opt-out of demand-response event {event.id}")
        log_event(log, "opt_out_withdrawal_sent", meter=self.status.name, id=event.id, modification=event.modification)
        return event.id

    def _send_dr(self, message: OptOut | OptOutWithdrawal, pending: set[tuple[int, int]], key: tuple[int, int]) -> None:
        """Send an opt-out or withdrawal in the background; if it cannot be sent, forget it was asked (it is
        asked again when the event is sent after the next login)."""
        link = self.link
        assert link is not None

        async def send() -> None:
            try:
                await link.send(message)
            except (WebSocketException, OSError):
                pending.discard(key)

        self._in_background(send())

    # ---------------------------------------------------------------- grid alerts

    def _expire_alerts(self) -> None:
        now = time.time()
        expired = [k for k, a in self.status.alerts.items() if a.get("expires_at", 0) <= now]
        for key in expired:
            del self.status.alerts[key]
        if expired:
            self._apply_demand_response()
            self._changed()

    def _apply_demand_response(self) -> None:
        """Scale the household's demand for the grid alerts and demand-response events in force now."""
        reduce = any(a.get("kind") == REDUCE_USAGE_KIND for a in self.status.active_alerts())
        taking_part = [(e.terms, e.status == "cancelled") for e in self.events.values() if not e.opted_out]
        factor = round((DEMAND_RESPONSE_FACTOR if reduce else 1.0) * demand_factor(taking_part, time.time()), 4)
        model = getattr(self.source, "model", None)
        if model is not None and model.demand_factor != factor:
            model.demand_factor = factor
            log_event(log, "demand_response", meter=self.status.name, factor=factor)
        self.status.demand_factor = factor
