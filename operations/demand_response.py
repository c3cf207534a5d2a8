"""Settle demand-response events and check every credit against a recomputation from the chain alone.

``settle`` measures each targeted meter of a completed event (``common.demand_response.measure_event``)
and submits the baselines and actuals in bounded batches; the contract prices each reduction and puts it
on the meter's open billing period. ``verify`` recomputes every event's responses from on-chain data
only and compares them, meter by meter, with the ``CreditApplied`` events. ``scripts/demand_response.py``
is the command line over both.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.demand_response import CreditRecord, DemandResponse, DrEvent, MeterResponse, Status, measure_event
from common.errors import InvalidRequest
from common.tariff import format_kwh

__all__ = ["CREDITS_PER_TX", "Settlement", "Mismatch", "EventRow", "settle", "verify", "event_table", "render_table"]

#: Credits per ``credit`` transaction (the contract takes up to 250; 100 cost about 2.5M gas).
CREDITS_PER_TX = 100


@dataclass(frozen=True)
class Settlement:
    """What settling an event did: the responses measured and how much was credited."""

    event_id: int
    responses: tuple[MeterResponse, ...]
    credited: int
    total: int


@dataclass(frozen=True)
class Mismatch:
    """A credit the chain's data does not give (or a credit missing or unexpected)."""

    event_id: int
    meter: str
    reason: str

    def __str__(self) -> str:
        return f"event {self.event_id}, meter {self.meter}: {self.reason}"


def settle(dr: DemandResponse, event_id: int) -> Settlement:
    """Measure and credit every targeted meter of a completed event that was not credited yet."""
    event = dr.event(event_id)
    if event.status != Status.COMPLETED:
        raise InvalidRequest(f"event {event_id} is {event.status.name.lower()}, not completed: settle it after "
                             f"{event.terms.end}")
    done = {c.meter for c in dr.credits(event_id)}
    responses = tuple(measure_event(dr, event))
    due = [(r.meter, r.measurement.baseline_wh, r.measurement.actual_wh) for r in responses
           if not r.opted_out and r.measurement is not None and r.measurement.baseline_wh is not None
           and r.meter not in done]
    for i in range(0, len(due), CREDITS_PER_TX):
        dr.credit(event_id, due[i:i + CREDITS_PER_TX])
    total = sum(r.credit(event.terms.credit_rate) for r in responses if r.meter not in done)
    return Settlement(event_id, responses, len(due), total)


def _compare(event_id: int, rate: int, response: MeterResponse, record: CreditRecord | None) -> str | None:
    m = response.measurement
    measurable = not response.opted_out and m is not None and m.baseline_wh is not None
    if record is None:
        return None  # not settled yet (or not creditable): nothing on chain to check
    if not measurable:
        why = "it opted out" if response.opted_out else "no baseline can be computed from the chain"
        return f"credited {record.amount} micropence, but {why}"
    assert m is not None
    wrong = []
    if record.baseline_wh != m.baseline_wh:
        wrong.append(f"baseline {record.baseline_wh} Wh, recomputed {m.baseline_wh} Wh")
    if record.actual_wh != m.actual_wh:
        wrong.append(f"actual {record.actual_wh} Wh, recomputed {m.actual_wh} Wh")
    if record.amount != response.credit(rate):
        wrong.append(f"credit {record.amount} micropence, recomputed {response.credit(rate)}")
    return "; ".join(wrong) or None


def verify(dr: DemandResponse) -> tuple[list[Mismatch], int]:
    """Recompute every credited event from the chain alone; (mismatches, credits checked)."""
    mismatches: list[Mismatch] = []
    checked = 0
    records = dr.credits()
    for event_id in sorted({c.event_id for c in records}):
        event = dr.event(event_id)
        by_meter = {c.meter: c for c in records if c.event_id == event_id}
        responses = {r.meter: r for r in measure_event(dr, event)}
        for meter, record in by_meter.items():
            checked += 1
            response = responses.get(meter)
            if response is None:
                mismatches.append(Mismatch(event_id, meter, "credited but not targeted by the event"))
                continue
            reason = _compare(event_id, event.terms.credit_rate, response, record)
            if reason:
                mismatches.append(Mismatch(event_id, meter, reason))
    return mismatches, checked


@dataclass(frozen=True)
class EventRow:
    """One targeted meter of an event: its recomputed response beside what the chain credited."""

    meter: str
    opted_out: bool
    baseline_wh: int | None
    actual_wh: int | None
    credited: int | None
    recomputed: int
    #: None when it agrees (or nothing was credited yet), else why not.
    mismatch: str | None


def event_table(dr: DemandResponse, event_id: int) -> tuple[DrEvent, list[EventRow]]:
    """An event and, for each meter it targeted, the response recomputed from the chain and the credit."""
    event = dr.event(event_id)
    records = {c.meter: c for c in dr.credits(event_id)}
    rows = []
    for r in measure_event(dr, event):
        m = r.measurement
        record = records.get(r.meter)
        rows.append(EventRow(r.meter, r.opted_out, m.baseline_wh if m else None, m.actual_wh if m else None,
                             record.amount if record else None, r.credit(event.terms.credit_rate),
                             _compare(event_id, event.terms.credit_rate, r, record)))
    return event, rows


def _kwh(wh: int | None) -> str:
    return "-" if wh is None else format_kwh(wh).removesuffix(" kWh")


def _pence(micropence: int | None) -> str:
    return "-" if micropence is None else f"{micropence / 1_000_000:.2f}p"


def render_table(event: DrEvent, rows: list[EventRow], names: dict[str, str] | None = None) -> str:
    """The event's settlement as a plain table, with a closing line saying whether every credit agrees."""
    names = names or {}
    target = ", ".join(event.regions) or f"{len(event.meters)} listed meters"
    labels = [(names.get(row.meter.lower(), "") + " " + row.meter).strip() for row in rows]
    width = max([len("meter"), *map(len, labels)])
    lines = [f"event {event.id} ({event.programme}, modification {event.modification}): "
             f"{event.status.name.lower()}, {event.terms.duration // 60} min from unix {event.terms.start}, "
             f"signal {event.terms.signal_kind.name.lower()} {event.terms.signal_value}, "
             f"{event.terms.credit_rate / 1000:g} p/kWh of reduction; target {target}",
             f"{'meter':<{width}} {'opted out':>9} {'baseline kWh':>12} {'actual kWh':>10} {'credit':>10} "
             f"{'recomputed':>10}  check"]
    for row, label in zip(rows, labels, strict=True):
        due = not row.opted_out and row.baseline_wh is not None
        check = row.mismatch or ("agrees" if row.credited is not None else "not credited yet" if due else "none due")
        lines.append(f"{label:<{width}} {'yes' if row.opted_out else 'no':>9} "
                     f"{_kwh(row.baseline_wh):>12} {_kwh(row.actual_wh):>10} {_pence(row.credited):>10} "
                     f"{_pence(row.recomputed):>10}  {check}")
    credited = [r for r in rows if r.credited is not None]
    wrong = [r for r in rows if r.mismatch]
    lines.append(f"{len(rows)} targeted, {sum(r.opted_out for r in rows)} opted out, {len(credited)} credited, "
                 f"{_pence(sum(r.credited or 0 for r in rows))} in all; the recomputation from the chain "
                 + (f"disagrees for {len(wrong)}" if wrong else "agrees to the micropence for every credit"))
    return "\n".join(lines)
