"""Typed, synchronous access to the DemandResponse contract, and each meter's measured response from the chain.

``DemandResponse`` wraps the contract's functions and views in named types (as ``common.billing`` does
for billing). ``measure_event`` computes every targeted meter's baseline, actual and credit for one
event from on-chain data alone (the billing contract's readings, the events' windows), so the
settlement (``operations.demand_response.settle``) and the recomputation share one implementation.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Sequence

from eth_utils import to_checksum_address

from common.baseline import Measurement, baseline, credit_bound_wh, half_hour_baseline, half_hourly, measure
from common.billing import Billing, from_text32, text32
from common.chain import LOG_CHUNK_BLOCKS, ChainClient, ErrorDecoder
from common.deployment import Deployment
from common.dr_book import EventBook
from common.dr_terms import Signal, Status, Terms, status_at
from common.errors import DeploymentMissing
from common.events import EventDecoder, unpack_record
from common.statement import CreditLine
from common.tariff import PERIOD_SECONDS, format_kwh

__all__ = [
    "Status",
    "Signal",
    "Terms",
    "status_at",
    "DrEvent",
    "Participation",
    "CreditRecord",
    "MeterResponse",
    "DemandResponse",
    "HalfHour",
    "MeterWindow",
    "measure_event",
    "meter_windows",
    "period_credits",
    "statement_credits",
]


class Participation(enum.IntEnum):
    """A meter's part in an event's current terms: none recorded yet (an opt-out of older terms has lapsed),
    opted out, credited, withdrew its opt-out."""

    NONE = 0
    OPTED_OUT = 1
    CREDITED = 2
    WITHDRAWN = 3


@dataclass(frozen=True)
class DrEvent:
    """An event as the contract holds it now, with its target from its creation event."""

    id: int
    programme: str
    modification: int
    notice_at: int
    terms: Terms
    status: Status
    regions: tuple[str, ...]
    meters: tuple[str, ...]


@dataclass(frozen=True)
class CreditRecord:
    """A ``CreditApplied`` event: the figures the settler submitted and the amount credited (micropence)."""

    meter: str
    event_id: int
    period_id: int
    baseline_wh: int
    actual_wh: int
    amount: int
    tx_hash: str


@dataclass(frozen=True)
class MeterResponse:
    """A targeted meter's response to an event as recomputed from the chain."""

    meter: str
    opted_out: bool
    measurement: Measurement | None

    def credit(self, rate: int) -> int:
        """The credit due at ``rate`` millipence per kWh, in micropence (none when opted out or unmeasured)."""
        if self.opted_out or self.measurement is None:
            return 0
        return self.measurement.reduction_wh * rate


class DemandResponse:
    """The DemandResponse contract through one ChainClient, with one method per operation."""

    def __init__(self, client: ChainClient, deployment: Deployment) -> None:
        if deployment.demand_response is None:
            raise DeploymentMissing("this deployment has no DemandResponse contract; run: .venv/bin/python "
                                    "scripts/deploy.py")
        self.client = client
        self.deployment = deployment
        self.billing = Billing(client, deployment)
        record = deployment.demand_response
        self.contract = client.w3.eth.contract(address=to_checksum_address(record.address), abi=record.abi)
        client.decoder = ErrorDecoder(deployment.abi + record.abi)
        self.settings = client.settings

    # grid operator
    def create_event(self, programme: str, terms: Terms, regions: Sequence[str] = (),
                     meters: Sequence[str] = ()) -> int:
        """Announce an event to regions or listed meters (grid operator key); returns its id."""
        call = self.contract.functions.createEvent(text32(programme), terms.as_struct(),
                                                   [text32(r) for r in regions],
                                                   [to_checksum_address(m) for m in meters])
        receipt = self.client.transact(self.settings.grid_operator_key, call)
        return int(self.contract.events.DemandResponseEvent().process_receipt(receipt)[0].args.id)

    def modify_event(self, event_id: int, terms: Terms) -> Any:
        """Change an event's terms before it starts (grid operator key); the contract is given the event's target
        lists as its creation log has them."""
        created = self._created(event_id)
        call = self.contract.functions.modifyEvent(event_id, terms.as_struct(), list(created.args.regions),
                                                   list(created.args.meters))
        return self.client.transact(self.settings.grid_operator_key, call)

    def cancel_event(self, event_id: int) -> Any:
        """Cancel an event before it starts (grid operator key)."""
        return self.client.transact(self.settings.grid_operator_key, self.contract.functions.cancelEvent(event_id))

    # anyone, with the meter's signature (the gateway pays)
    def opt_out(self, event_id: int, meter: str, modification: int, signature: str, key: str | None = None,
                *, withdrawal: bool = False) -> Any:
        """Relay a meter's signed opt-out of the event's terms at ``modification`` (or, ``withdrawal``, its
        withdrawal), paid by ``key``, the gateway's by default."""
        fn = self.contract.functions.withdrawOptOut if withdrawal else self.contract.functions.optOut
        call = fn(event_id, to_checksum_address(meter), modification, bytes.fromhex(signature[2:]))
        return self.client.transact(key or self.settings.gateway_key, call)

    # settler
    def credit(self, event_id: int, credits: Sequence[tuple[str, int, int]]) -> Any:
        """Record (meter, baseline Wh, actual Wh) of many meters for a completed event (operator key)."""
        call = self.contract.functions.credit(event_id, [(to_checksum_address(m), b, a) for m, b, a in credits])
        return self.client.transact(self.settings.operator_key, call)

    # views
    def event_ids(self) -> list[int]:
        """Every event's id, oldest first."""
        return list(range(1, int(self.contract.functions.eventCount().call()) + 1))

    def _created(self, event_id: int) -> Any:
        """The event's creation log (``DemandResponseEvent`` of modification 0), which holds its target."""
        logs = self.contract.events.DemandResponseEvent().get_logs(
            from_block=self.deployment.block, argument_filters={"id": event_id})
        return next(e for e in logs if int(e.args.modification) == 0)

    def event(self, event_id: int) -> DrEvent:
        """An event's current terms, status and target."""
        terms, programme, modification, notice_at, status = self.contract.functions.eventOf(event_id).call()
        first = self._created(event_id)
        return DrEvent(event_id, from_text32(programme), int(modification), int(notice_at), Terms.from_struct(terms),
                       Status(int(status)), tuple(from_text32(r) for r in first.args.regions),
                       tuple(to_checksum_address(m) for m in first.args.meters))

    def targeted(self, event: DrEvent) -> list[str]:
        """The meters an event targets (its listed meters, or every registered meter of its regions)."""
        if event.meters:
            return list(event.meters)
        return [m for m in self.billing.meters() if self.billing.meter(m).region in event.regions]

    def signed_terms(self, event_id: int) -> tuple[int, Terms, Status] | None:
        """What an opt-out of the event signs now: its modification number and terms (and its status); None when
        there is no such event."""
        if not 1 <= event_id <= int(self.contract.functions.eventCount().call()):
            return None
        terms, _, modification, _, status = self.contract.functions.eventOf(event_id).call()
        return int(modification), Terms.from_struct(terms), Status(int(status))

    def max_power_w(self) -> int:
        """The plausibility bound on supply power (W) that bounds every baseline (the billing contract's)."""
        return int(self.contract.functions.maxPowerW().call())

    def terms_of(self, event_id: int) -> tuple[Terms, Status, str]:
        """An event's current terms, status and programme (one call, no logs)."""
        terms, programme, _, _, status = self.contract.functions.eventOf(event_id).call()
        return Terms.from_struct(terms), Status(int(status)), from_text32(programme)

    def is_targeted(self, event_id: int, meter: str) -> bool:
        """Whether an event targets a meter (listed, or registered in one of its regions)."""
        return bool(self.contract.functions.isTargeted(event_id, to_checksum_address(meter)).call())

    def participation(self, event_id: int, meter: str) -> Participation:
        """A meter's participation in an event."""
        return Participation(int(self.contract.functions.participation(event_id, to_checksum_address(meter)).call()))

    def credit_of(self, meter: str, period_id: int) -> int:
        """The demand-response credits recorded against a meter's billing period, in micropence."""
        return int(self.contract.functions.creditOf(to_checksum_address(meter), period_id).call())

    def opted_out(self, event_id: int) -> set[str]:
        """The meters opted out of an event's current terms (from its ``OptedOut`` and ``OptOutWithdrawn`` logs
        of its current modification)."""
        event = self.book().events.get(event_id)
        return set() if event is None else {to_checksum_address(m) for m in event.opted_out}

    def credits(self, event_id: int | None = None, meter: str | None = None) -> list[CreditRecord]:
        """Every credit recorded (``CreditApplied`` logs), for one event or all, one meter or all."""
        filters: dict[str, Any] = {} if event_id is None else {"eventId": event_id}
        if meter is not None:
            filters["meter"] = to_checksum_address(meter)
        logs = self.contract.events.CreditApplied().get_logs(from_block=self.deployment.block,
                                                             argument_filters=filters)
        return [CreditRecord(to_checksum_address(e.args.meter), int(e.args.eventId), int(e.args.periodId),
                             int(e.args.baselineWh), int(e.args.actualWh), int(e.args.amount),
                             "0x" + bytes(e.transactionHash).hex()) for e in logs]

    def book(self) -> EventBook:
        """Every event, opt-out and credit so far, from one read of the contract's logs (in chunks of blocks)."""
        book = EventBook()
        assert self.deployment.demand_response is not None
        decoder = EventDecoder(self.deployment.demand_response.abi)
        head = self.client.w3.eth.block_number
        for first in range(self.deployment.block, head + 1, LOG_CHUNK_BLOCKS):
            logs = self.client.w3.eth.get_logs({"address": self.contract.address, "fromBlock": first,
                                                "toBlock": min(first + LOG_CHUNK_BLOCKS - 1, head)})
            for raw in logs:
                event = decoder.decode(raw)
                if event is not None:
                    book.apply(event)
        return book

    def windows(self) -> list[tuple[int, int]]:
        """The active periods of every event not cancelled (days holding one are no baseline days)."""
        out = []
        for i in self.event_ids():
            terms, status, _ = self.terms_of(i)
            if status != Status.CANCELLED:
                out.append((terms.start, terms.end))
        return out


def _usage(billing: Billing, meter: str) -> Any:
    """A meter's half-hourly import energy from its ``MeterRegistered`` and ``ReadingRecorded`` events."""
    events = billing.contract.events
    start = billing.deployment.block
    reg = events.MeterRegistered().get_logs(from_block=start, argument_filters={"meter": meter})[-1]
    recorded = events.ReadingRecorded().get_logs(from_block=reg.blockNumber, argument_filters={"meter": meter})
    fields = (unpack_record(int(e.args.record)) for e in recorded)
    return half_hourly((int(reg.args.openedAt), int(reg.args.openingWh)),
                       ((f["timestamp"], f["energyWh"]) for f in fields))


def measure_event(dr: DemandResponse, event: DrEvent) -> list[MeterResponse]:
    """Every targeted meter's response to a completed event, from the chain alone."""
    windows = dr.windows()
    opted = dr.opted_out(event.id)
    cap = credit_bound_wh(dr.max_power_w(), event.terms.start, event.terms.end)
    out = []
    for meter in dr.targeted(event):
        if meter in opted:
            out.append(MeterResponse(meter, True, None))
            continue
        try:
            m = measure(_usage(dr.billing, meter), event.terms.start, event.terms.end, windows, cap)
        except ValueError:
            m = None
        out.append(MeterResponse(meter, False, m))
    return out


@dataclass(frozen=True)
class HalfHour:
    """One half hour of an event's window for one meter: baseline and actual Wh (None when not known)."""

    start: int
    baseline_wh: int | None
    actual_wh: int | None


@dataclass(frozen=True)
class MeterWindow:
    """An event's window as one targeted meter went through it, with its baseline against its actual.

    ``baseline_kind`` says where the baseline comes from: ``credited`` (the settlement's, from
    ``CreditApplied``), ``provisional`` (computed now from the chain by ``common.baseline``, for an event
    active or completed but not credited), or None (an event to come, a meter that opted out, or too
    few baseline days). The half hours split the baseline as the baseline days used energy, summing to
    ``baseline_wh``.
    """

    event_id: int
    programme: str
    terms: Terms
    status: Status
    opted_out: bool
    baseline_kind: str | None
    baseline_wh: int | None
    actual_wh: int | None
    credit: CreditRecord | None
    half_hours: tuple[HalfHour, ...]


def meter_windows(dr: DemandResponse, meter: str, start: int, end: int) -> list[MeterWindow]:
    """The events targeting ``meter`` whose active period overlaps [start, end), oldest first (not cancelled)."""
    meter = to_checksum_address(meter)
    terms = {i: dr.terms_of(i) for i in dr.event_ids()}
    windows = [(t.start, t.end) for t, status, _ in terms.values() if status != Status.CANCELLED]
    chosen = [i for i, (t, status, _) in terms.items()
              if status != Status.CANCELLED and t.start < end and start < t.end and dr.is_targeted(i, meter)]
    if not chosen:
        return []
    credits = {c.event_id: c for c in dr.credits(meter=meter)}
    max_power_w = dr.max_power_w()
    usage = None
    out = []
    for i in chosen:
        t, status, programme = terms[i]
        opted_out = dr.participation(i, meter) == Participation.OPTED_OUT
        if status in (Status.FAR, Status.NEAR) or opted_out:
            out.append(_window_only(i, programme, t, status, opted_out))
            continue
        if usage is None:
            usage = _usage(dr.billing, meter)
        out.append(_measured_window(i, programme, t, status, usage, windows, credits.get(i),
                                    credit_bound_wh(max_power_w, t.start, t.end)))
    return out


def _window_only(event_id: int, programme: str, terms: Terms, status: Status, opted_out: bool) -> MeterWindow:
    """An event's window with no figures (to come, or opted out)."""
    halves = tuple(HalfHour(s, None, None) for s in range(terms.start, terms.end, PERIOD_SECONDS))
    return MeterWindow(event_id, programme, terms, status, opted_out, None, None, None, None, halves)


def _measured_window(event_id: int, programme: str, terms: Terms, status: Status, usage: Any,
                     windows: Sequence[tuple[int, int]], credit: CreditRecord | None, cap_wh: int) -> MeterWindow:
    """An active or completed event's window: the credited baseline, or one computed now (provisional)."""
    computed, days = baseline(usage, terms.start, terms.end, windows, cap_wh)
    kind: str | None = "credited"
    base: int | None = credit.baseline_wh if credit else computed
    actual: int | None = credit.actual_wh if credit else usage.energy(terms.start, terms.end)
    if credit is None:
        kind = "provisional" if computed is not None else None
    starts = range(terms.start, terms.end, PERIOD_SECONDS)
    shares = half_hour_baseline(usage, terms.start, days, base, len(starts)) if base is not None else None
    halves = tuple(HalfHour(s, shares[k] if shares is not None else None, usage.energy(s, s + PERIOD_SECONDS))
                   for k, s in enumerate(starts))
    return MeterWindow(event_id, programme, terms, status, False, kind, base, actual, credit, halves)


def period_credits(dr: DemandResponse, meter: str | None = None) -> dict[tuple[str, int], int]:
    """The credits recorded against each (meter, billing period), in micropence, for one meter or all."""
    out: dict[tuple[str, int], int] = {}
    for c in dr.credits(meter=meter):
        out[c.meter, c.period_id] = out.get((c.meter, c.period_id), 0) + c.amount
    return out


def statement_credits(client: ChainClient, deployment: Deployment, meter: str, period_id: int) -> list[CreditLine]:
    """The demand-response credits on a meter's billing period, as statement lines (none without the contract)."""
    if deployment.demand_response is None:
        return []
    dr = DemandResponse(client, deployment)
    return [CreditLine("demand_response", f"Demand response: event {c.event_id}, "
                       f"{format_kwh(c.baseline_wh - c.actual_wh)} below the baseline", c.amount)
            for c in dr.credits(meter=meter) if c.period_id == period_id and c.amount > 0]
