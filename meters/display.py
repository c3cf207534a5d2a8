"""Renders a meter's status: a live ``rich`` panel on a terminal, one structured line per event
otherwise; and the fleet table ``run-clients.sh`` shows for every meter at once."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from common.tariff import format_pounds
from meters.status import LinkState, MeterStatus

__all__ = ["render_meter", "render_fleet", "SEVERITY_STYLE", "STATE_STYLE"]

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


def _rate(status: MeterStatus) -> str:
    return f"{status.unit_rate / 1000:.2f} p/kWh + {status.standing_charge / 1000:.2f} p/day"


def render_meter(status: MeterStatus, now: float | None = None) -> Panel:
    """The single-meter view: identity, reading, live bill, connection, errors, alerts."""
    now = time.time() if now is None else now
    rows = Table.grid(padding=(0, 2))
    rows.add_column(style="bold")
    rows.add_column()
    rows.add_row("Meter", f"{status.name}  {status.meter}")
    rows.add_row("Household", f"{status.archetype} · region {status.region or '-'}")
    rows.add_row("Register", f"{status.register_wh / 1000:,.3f} kWh")
    rows.add_row("Last reading", f"#{status.last_seq} · {_ago(status.last_reading_at, now)}")
    due = Text(f"{format_pounds(status.amount_due)} due", style="bold")
    if not status.bill_final:
        due.append("  provisional: its block may still be replaced", style="yellow")
    rows.add_row("Live bill", due)
    rows.add_row("", f"{status.period_energy_wh / 1000:,.3f} kWh this period · bill for reading #{status.bill_seq}")
    rows.add_row("Tariff", _rate(status) if status.unit_rate else "-")
    rows.add_row("Connection", Text(f"{status.state.value} to {status.server}", style=STATE_STYLE[status.state]))
    rows.add_row("Waiting", f"{status.waiting} reading(s) not yet billed")
    if status.demand_factor < 1.0 or status.multiplier != 1.0:
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


def render_fleet(statuses: list[MeterStatus], now: float | None = None) -> Group:
    """Every meter on one screen: bill, state and last problem; alerts in force above the table."""
    now = time.time() if now is None else now
    table = Table(title="Smart-meter fleet", expand=True)
    for col in ("Meter", "Region", "State", "Register kWh", "Reading", "Bill", "Waiting", "Last problem"):
        table.add_column(col, no_wrap=col != "Last problem")
    alerts: dict[int, dict[str, Any]] = {}
    for s in statuses:
        for alert in s.active_alerts(now):
            alerts[int(alert.get("id", 0))] = alert
        stale = now - s.updated_at > 30 and s.state is not LinkState.STOPPED
        state = Text("no status" if stale else s.state.value, style="red" if stale else STATE_STYLE[s.state])
        table.add_row(
            s.name, s.region, state, f"{s.register_wh / 1000:,.1f}", f"#{s.last_seq}",
            format_pounds(s.amount_due) + ("" if s.bill_final else " (provisional)"), str(s.waiting),
            s.last_error if s.last_error else "",
        )
    lines: list[RenderableType] = []
    for alert in sorted(alerts.values(), key=lambda a: -int(a.get("severity", 0))):
        label, style = SEVERITY_STYLE.get(int(alert.get("severity", 0)), SEVERITY_STYLE[0])
        lines.append(Text(f" GRID ALERT {label}: {alert.get('message')} ({alert.get('region') or 'all regions'}) ",
                          style=style))
    return Group(*lines, table)
