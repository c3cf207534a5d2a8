"""Renders a meter's status: a live ``rich`` panel on a terminal, one structured line per event
otherwise; and the fleet table ``run-clients.sh`` shows for every meter at once, or (when its output
is not a terminal) ``FleetLog``'s line for a meter whenever its state, bill or problem changes.

The fleet table tells a healthy meter from one that is stuck (its status not written for
``STALE_AFTER_HEARTBEATS`` heartbeats: readings may be a minute apart, the heartbeat is not)
and from one whose process has ended (the supervisor passes the exit codes)."""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from common.messages import DemandResponseMessage
from common.tariff import format_kwh, format_pounds
from meters.status import LinkState, MeterStatus, readings_phrase

__all__ = ["render_meter", "describe_event", "fleet_events", "render_fleet", "fleet_state", "describe_connection",
           "describe_exit", "fleet_bill", "fleet_problem", "FleetLog", "SEVERITY_STYLE", "STATE_STYLE"]

SEVERITY_STYLE = {0: ("INFO", "bold cyan"), 1: ("WARNING", "bold yellow"), 2: ("CRITICAL", "bold white on red")}
STATE_STYLE = {
    LinkState.STARTING: "dim",
    LinkState.CONNECTING: "yellow",
    LinkState.CONNECTED: "bold green",
    LinkState.DISCONNECTED: "bold red",
    LinkState.STOPPED: "dim",
}


def _ago(ts: float, now: float) -> str:
    if not ts:
        return "never"
    seconds = int(now - ts)
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def describe_connection(state: LinkState, server: str) -> str:
    """The connection in words: ``connected to wss://...``, ``disconnected from wss://...``."""
    return {
        LinkState.STARTING: "starting",
        LinkState.CONNECTING: f"connecting to {server}",
        LinkState.CONNECTED: f"connected to {server}",
        LinkState.DISCONNECTED: f"disconnected from {server}",
        LinkState.STOPPED: "stopped",
    }[state]


def describe_exit(code: int) -> str:
    """How a meter process ended: ``exit code 1`` or ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def fleet_state(status: MeterStatus, now: float, exit_code: int | None = None) -> tuple[str, str]:
    """The fleet table's state cell (text, style): the meter's own state unless it is stale or its process ended."""
    if exit_code is not None:
        if exit_code == 0 and status.state is LinkState.STOPPED:
            return "stopped", STATE_STYLE[LinkState.STOPPED]
        return f"ended ({describe_exit(exit_code)})", "bold red"
    if status.stale(now):
        if not status.updated_at:
            return "no status yet", "bold red"
        return f"no status for {_ago(status.updated_at, now).removesuffix(' ago')}", "bold red"
    return status.state.value, STATE_STYLE[status.state]


def fleet_bill(status: MeterStatus) -> str:
    """The fleet table's bill cell: ``£19.51``, or ``£19.51 (provisional)`` while its block may be replaced."""
    return format_pounds(status.amount_due) + ("" if status.bill_final else " (provisional)")


def fleet_problem(status: MeterStatus, label: str, exit_code: int | None) -> str:
    """The fleet table's last-problem cell: the meter's own, or that its process ended."""
    if exit_code is not None and label != "stopped":
        return f"the meter's process ended ({describe_exit(exit_code)}); see its console.log and meter.log"
    return status.last_error


class FleetLog:
    """The fleet for a log file or a pipe: a line for a meter only when its state, bill or problem changed.

    The line says what the fleet table would show in that row, money in pounds:
    ``fleet meter=meter-01 state='connected' bill='£19.51' seq=42 waiting=0 problem=''``. A meter
    whose status goes stale is one change (``no status for ...``), not one a second.
    """

    def __init__(self) -> None:
        self._shown: dict[str, tuple[str, str, str]] = {}

    def lines(self, statuses: list[MeterStatus], now: float, exit_codes: Mapping[str, int] | None = None
              ) -> list[str]:
        """The lines for the meters that changed since the last call (every meter the first time)."""
        exit_codes = exit_codes or {}
        out = []
        for s in statuses:
            code = exit_codes.get(s.name)
            label, _ = fleet_state(s, now, code)
            bill, problem = fleet_bill(s), fleet_problem(s, label, code)
            stale = code is None and s.stale(now)
            key = ("stale" if stale else label, bill, problem)
            if self._shown.get(s.name) == key:
                continue
            self._shown[s.name] = key
            out.append(f"fleet meter={s.name} state={label!r} bill={bill!r} seq={s.last_seq} waiting={s.waiting} "
                       f"problem={problem!r}")
        return out


def _rate(status: MeterStatus) -> str:
    export = f" · export {status.export_rate / 1000:.2f} p/kWh" if status.export_rate else ""
    return f"{status.unit_rate / 1000:.2f} p/kWh + {status.standing_charge / 1000:.2f} p/day{export}"


def describe_event(event: DemandResponseMessage, now: float) -> str:
    """One demand-response event as the panel shows it: when, what it asks, its status and this meter's part.

    ``event 3 (Flex) 18:00-18:30 · level 2 · near · taking part``
    """
    window = f"{time.strftime('%H:%M', time.localtime(event.start))}-" \
             f"{time.strftime('%H:%M', time.localtime(event.start + event.duration))}"
    signal = (f"{event.signal_value / 1000:.2f} p/kWh" if event.signal_kind == "price"
              else f"level {event.signal_value}")
    status = event.status_now(now).name.lower()
    if event.opted_out:
        part = "opted out"
    elif event.credit is not None:
        below = (event.baseline_wh or 0) - (event.actual_wh or 0)
        part = (f"credited {format_pounds(event.credit)} ({format_kwh(below)} below the baseline)" if event.credit
                else "settled: no reduction against the baseline")
    elif status == "cancelled":
        part = "-"
    else:
        part = "taking part"
    revised = f" (revision {event.modification})" if event.modification else ""
    return f"event {event.id}{revised} ({event.programme}) {window} · {signal} · {status} · {part}"


def render_meter(status: MeterStatus, now: float | None = None) -> Panel:
    """The single-meter view: identity, reading, live bill, connection, errors, alerts."""
    now = time.time() if now is None else now
    rows = Table.grid(padding=(0, 2))
    rows.add_column(style="bold")
    rows.add_column()
    rows.add_row("Meter", f"{status.name}  {status.meter}")
    rows.add_row("Household", f"{status.archetype} · region {status.region or '-'}")
    exported = f" · exported {status.export_register_wh / 1000:,.3f} kWh" if status.export_register_wh else ""
    rows.add_row("Register", f"{status.register_wh / 1000:,.3f} kWh{exported}")
    rows.add_row("Last reading", f"#{status.last_seq} · {_ago(status.last_reading_at, now)}")
    due = Text(f"{format_pounds(-status.amount_due)} in credit" if status.amount_due < 0
               else f"{format_pounds(status.amount_due)} due", style="bold")
    if not status.bill_final:
        due.append("  provisional: its block may still be replaced", style="yellow")
    rows.add_row("Live bill", due)
    rows.add_row("", f"{status.period_energy_wh / 1000:,.3f} kWh this period · bill for reading #{status.bill_seq}")
    if status.period_export_wh or status.export_credit:
        rows.add_row("", f"{status.period_export_wh / 1000:,.3f} kWh exported · "
                         f"{format_pounds(status.export_credit)} credit")
    rows.add_row("Tariff", _rate(status) if status.unit_rate else "-")
    rows.add_row("Connection", Text(describe_connection(status.state, status.server), style=STATE_STYLE[status.state]))
    rows.add_row("Waiting", f"{readings_phrase(status.waiting)} not yet billed")
    if status.last_event:
        rows.add_row("Last event", f"{status.last_event} ({_ago(status.last_event_at, now)})")
    events = [DemandResponseMessage.model_validate(e) for e in status.dr_events.values()]
    for i, event in enumerate(sorted(events, key=lambda e: -e.id)[:3]):
        rows.add_row("Demand response" if i == 0 else "", describe_event(event, now))
    if status.demand_factor != 1.0 or status.multiplier != 1.0:
        rows.add_row("Usage", f"x{status.multiplier:.2f} consumption, x{status.demand_factor:.2f} demand response")
    parts: list[RenderableType] = [rows]
    for alert in status.active_alerts(now):
        label, style = SEVERITY_STYLE.get(int(alert.get("severity", 0)), SEVERITY_STYLE[0])
        where = alert.get("region") or "all regions"
        parts.append(Text(f" GRID ALERT {label}: {alert.get('message')} ({where}) ", style=style))
    for notice in status.notices[-2:]:
        parts.append(Text(f"Consumption: {notice}", style="bold magenta"))
    if status.last_error:
        parts.append(Text(f"Problem ({_ago(status.last_error_at, now)}): {status.last_error}", style="red"))
    return Panel(Group(*parts), title=f"Smart meter {status.name}", border_style=STATE_STYLE[status.state])


def render_fleet(statuses: list[MeterStatus], now: float | None = None,
                 exit_codes: Mapping[str, int] | None = None) -> Group:
    """Every meter on one screen: bill, state and last problem; alerts in force above the table.

    ``exit_codes`` holds the meters whose process has ended, by name.
    """
    now = time.time() if now is None else now
    exit_codes = exit_codes or {}
    table = Table(title="Smart-meter fleet", expand=True)
    for col in ("Meter", "Region", "State", "Register kWh", "Reading", "Bill", "Waiting", "Last problem"):
        table.add_column(col, no_wrap=col != "Last problem")
    alerts: dict[int, dict[str, Any]] = {}
    for s in statuses:
        for alert in s.active_alerts(now):
            alerts[int(alert.get("id", 0))] = alert
        code = exit_codes.get(s.name)
        label, style = fleet_state(s, now, code)
        table.add_row(
            s.name, s.region, Text(label, style=style), f"{s.register_wh / 1000:,.1f}", f"#{s.last_seq}",
            fleet_bill(s), str(s.waiting), fleet_problem(s, label, code),
        )
    lines: list[RenderableType] = []
    for alert in sorted(alerts.values(), key=lambda a: -int(a.get("severity", 0))):
        label, style = SEVERITY_STYLE.get(int(alert.get("severity", 0)), SEVERITY_STYLE[0])
        lines.append(Text(f" GRID ALERT {label}: {alert.get('message')} ({alert.get('region') or 'all regions'}) ",
                          style=style))
    lines.extend(Text(line, style="bold blue") for line in fleet_events(statuses, now))
    return Group(*lines, table)


def fleet_events(statuses: list[MeterStatus], now: float) -> list[str]:
    """One line per demand-response event not over, newest last: its window, status and the meters' parts.

    ``DEMAND RESPONSE event 1 (flex-demo) 06:00-06:30 · level 2 · near: 11 taking part, 1 opted out``
    """
    parts: dict[int, tuple[DemandResponseMessage, list[bool]]] = {}
    for s in statuses:
        for raw in s.dr_events.values():
            event = DemandResponseMessage.model_validate(raw)
            known = parts.get(event.id)
            if known is None or known[0].modification < event.modification:
                parts[event.id] = (event, (known[1] if known else []))
            parts[event.id][1].append(event.opted_out)
    out = []
    for event, opted in (parts[i] for i in sorted(parts)):
        if event.status_now(now).name in ("COMPLETED", "CANCELLED") and event.start + event.duration < now - 3_600:
            continue
        head = describe_event(event, now).rsplit(" · ", 1)[0]
        out.append(f" DEMAND RESPONSE {head}: {opted.count(False)} taking part, {opted.count(True)} opted out ")
    return out
