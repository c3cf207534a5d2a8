"""A customer's statement of one billing period: one typed model, built in one place.

The API builds it from the index and ``meterctl statement`` from the chain's logs; both hand
``build_statement`` the same inputs: the period's figures as the contract issued them
(``BillIssued``) or holds them (``openBill``), the registers at the period's start, the period's
readings with where each one is on chain, and the tariff schedule. ``common.statement_render``
turns the model into PDF and CSV, so both places give the same document.

The builder checks its own work before anything is printed: the consumption by day adds up to
the period's energy to the Wh and to its import charge and export credit to the micropence
(each reading split over half hours and priced as the contract does, ``common.tariff``), the
registers close where the readings say, and the standing charge and the amount due are the
chain's. A statement that does not add up is refused with the reason, never drawn up.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from common.errors import StatementMismatch
from common.tariff import (
    BANDED,
    CLOCK_GMT,
    PERIOD_SECONDS,
    OpenBill,
    Schedule,
    describe_rule,
    format_kwh,
    split_pair,
    standing_charge,
)

__all__ = [
    "Status",
    "Account",
    "ChainPlace",
    "RecordedReading",
    "MeterRestart",
    "Issue",
    "ReadingLine",
    "DayLine",
    "TariffLine",
    "CreditLine",
    "Statement",
    "build_statement",
]


class Status(str, enum.Enum):
    """Whether the bill was issued on chain or the period is still open (its figures will change)."""

    ISSUED = "issued"
    PROVISIONAL = "provisional"


@dataclass(frozen=True)
class Account:
    """Whose statement it is: the meter and its account on chain, the holder's details off chain."""

    meter: str
    meter_name: str | None
    account_ref: str
    region: str
    customer_name: str
    postal_address: str


@dataclass(frozen=True)
class ChainPlace:
    """Where every line of the statement can be looked up: the chain and the contract."""

    chain_id: int
    contract: str


@dataclass(frozen=True)
class RecordedReading:
    """A reading as the contract recorded it (``ReadingRecorded``), with its block and transaction."""

    seq: int
    timestamp: int
    import_register_wh: int
    export_register_wh: int
    block: int
    tx_hash: str
    #: "meter" for a signed reading; "exchange" or "reset" for the final read of a meter exchange or register
    #: reset (its seq is the last reading's).
    source: str = "meter"


@dataclass(frozen=True)
class MeterRestart:
    """A meter exchange or register reset (``MeterExchanged``, ``RegisterReset``): from ``at`` on, the registers
    read ``import_register_wh`` and ``export_register_wh`` on ``meter`` (the new meter after an exchange) and its
    sequence starts again at 1."""

    kind: str
    at: int
    meter: str
    import_register_wh: int
    export_register_wh: int
    block: int
    tx_hash: str


@dataclass(frozen=True)
class Issue:
    """The ``BillIssued`` event of an issued bill: its transaction and its block's time."""

    tx_hash: str
    at: int


@dataclass(frozen=True)
class ReadingLine:
    """One reading of the appendix: its registers, the energy since the previous one, where it is on chain."""

    seq: int
    timestamp: int
    import_register_wh: int
    export_register_wh: int
    import_wh: int
    export_wh: int
    block: int
    tx_hash: str
    source: str = "meter"


@dataclass(frozen=True)
class DayLine:
    """One local day of the period: energy imported and exported, its import charge and export credit."""

    day: dt.date
    import_wh: int
    export_wh: int
    import_cost: int
    export_credit: int


@dataclass(frozen=True)
class TariffLine:
    """A tariff version in force during the period, and the part of the period it priced ([start, end))."""

    version: int
    effective_from: int
    start: int
    end: int
    standing_charge: int
    import_pricing: str
    export_pricing: str
    #: The clock band tables are read in ("GMT all year", "UK clock time"); empty when neither side is banded.
    clock: str


@dataclass(frozen=True)
class CreditLine:
    """Something that lowers the amount due (micropence): the export credit, and any other credit on chain."""

    kind: str
    description: str
    amount: int


@dataclass(frozen=True)
class Statement:
    """A billing period's statement. Energy in Wh, money in micropence, rates in millipence, times in unix
    seconds; ``timezone`` is the zone its days and times are written in."""

    account: Account
    chain: ChainPlace
    period_id: int
    period_start: int
    period_end: int
    status: Status
    opening_import_wh: int
    closing_import_wh: int
    opening_export_wh: int
    closing_export_wh: int
    import_wh: int
    export_wh: int
    energy_charge: int
    standing_charge: int
    credits: tuple[CreditLine, ...]
    amount_due: int
    days: tuple[DayLine, ...]
    tariffs: tuple[TariffLine, ...]
    readings: tuple[ReadingLine, ...]
    issue: Issue | None
    drawn_up_at: int
    timezone: str
    #: Meter exchanges and register resets in the period, in time order.
    restarts: tuple[MeterRestart, ...] = ()

    @property
    def provisional(self) -> bool:
        """Whether the period is still open."""
        return self.status is Status.PROVISIONAL

    @property
    def total_credits(self) -> int:
        """Every credit added up."""
        return sum(c.amount for c in self.credits)

    @property
    def in_credit(self) -> bool:
        """Whether the credits exceed the charges (the amount due is negative)."""
        return self.amount_due < 0

    @property
    def tz(self) -> ZoneInfo:
        """The time zone days and times are written in."""
        return ZoneInfo(self.timezone)


def _local_day(t: int, tz: ZoneInfo) -> dt.date:
    return dt.datetime.fromtimestamp(t, tz).date()


def _days(start: int, end: int, tz: ZoneInfo) -> list[dt.date]:
    """Every local day from the one holding ``start`` to the one holding the period's last second."""
    first, last = _local_day(start, tz), _local_day(max(start, end - 1), tz)
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _tariff_lines(schedule: Schedule, start: int, end: int) -> list[TariffLine]:
    """The versions that priced some of [start, end) (the one in force at ``start`` for an empty period)."""
    versions = schedule.versions
    out = []
    for i, v in enumerate(versions):
        until = versions[i + 1].effective_from if i + 1 < len(versions) else max(end, start + 1)
        lo, hi = max(start, v.effective_from), min(max(end, start + 1), until)
        if hi > lo:
            out.append(TariffLine(
                version=i + 1, effective_from=v.effective_from, start=lo, end=min(hi, end) if end > start else start,
                standing_charge=v.standing_charge, import_pricing=describe_rule(v.import_rule),
                export_pricing=describe_rule(v.export_rule),
                clock="" if BANDED not in (v.import_rule.kind, v.export_rule.kind)
                else "GMT all year" if v.clock == CLOCK_GMT else "UK clock time"))
    return out


def build_statement(
    *,
    account: Account,
    chain: ChainPlace,
    figures: OpenBill,
    amount_due: int,
    issue: Issue | None,
    opening: tuple[int, int],
    readings: Sequence[RecordedReading],
    schedule: Schedule,
    tz: ZoneInfo,
    drawn_up_at: int,
    credits: Sequence[CreditLine] = (),
    restarts: Sequence[MeterRestart] = (),
) -> Statement:
    """The statement of one billing period, checked against the chain's figures.

    Args:
        figures: the period as ``BillIssued`` or ``openBill`` gives it.
        amount_due: the chain's amount due (``BillIssued.amountDue`` or ``openBill``'s).
        issue: the bill's ``BillIssued`` transaction, or None while the period is open (provisional).
        opening: the import and export registers at the period's start, in Wh.
        readings: the period's recorded readings and final reads, in time order (of every meter of the account).
        restarts: the period's meter exchanges and register resets: the registers read anew from each on.
        schedule: the tariff versions, clock changes and day-ahead prices as published on chain.
        credits: credits on chain beyond the export credit (each lowers the amount due), listed after it.

    Raises:
        StatementMismatch: the readings or the schedule do not give the chain's figures.
    """
    start, end = figures.period_start, figures.period_end
    where = f"period {figures.period_id} of {account.meter}"
    days: dict[dt.date, list[int]] = {d: [0, 0, 0, 0] for d in _days(start, end, tz)}
    lines: list[ReadingLine] = []
    t, imported, exported, seq = start, opening[0], opening[1], 0
    pending = sorted(restarts, key=lambda x: x.at)

    def restart_before(limit: int) -> None:
        """Apply the restarts before ``limit`` (one at a reading's time comes after it: its final read)."""
        nonlocal imported, exported, seq
        while pending and pending[0].at < limit:
            r = pending.pop(0)
            if not start <= t <= r.at <= end:
                raise StatementMismatch(f"{where}: the {r.kind} at {r.at} is out of order or outside the period")
            imported, exported, seq = r.import_register_wh, r.export_register_wh, 0

    for r in readings:
        restart_before(r.timestamp)
        final = r.source != "meter"
        if (r.seq < seq if final else r.seq <= seq) or not t < r.timestamp <= end:
            raise StatementMismatch(f"{where}: reading {r.seq} at {r.timestamp} is out of order or outside "
                                    f"the period ({start} to {end})")
        d_in, d_out = r.import_register_wh - imported, r.export_register_wh - exported
        if d_in < 0 or d_out < 0:
            raise StatementMismatch(f"{where}: reading {r.seq}'s registers are below the previous ones")
        for p, wh_in, wh_out in split_pair(t, r.timestamp, d_in, d_out):
            if wh_in or wh_out:
                price_in, price_out = schedule.prices(p)
                row = days.setdefault(_local_day(p * PERIOD_SECONDS, tz), [0, 0, 0, 0])
                row[0] += wh_in
                row[1] += wh_out
                row[2] += wh_in * price_in
                row[3] += wh_out * price_out
        lines.append(ReadingLine(r.seq, r.timestamp, r.import_register_wh, r.export_register_wh, d_in, d_out,
                                 r.block, r.tx_hash, r.source))
        t, imported, exported, seq = r.timestamp, r.import_register_wh, r.export_register_wh, r.seq
    restart_before(end + 1)
    day_lines = tuple(DayLine(d, *v) for d, v in sorted(days.items()))
    computed = {
        "import Wh": (sum(d.import_wh for d in day_lines), figures.import_wh),
        "export Wh": (sum(d.export_wh for d in day_lines), figures.export_wh),
        "import charge": (sum(d.import_cost for d in day_lines), figures.import_cost),
        "export credit": (sum(d.export_credit for d in day_lines), figures.export_credit),
        "standing charge": (standing_charge(schedule.versions, start, end), figures.standing_charge),
        "amount due": (figures.amount_due - sum(c.amount for c in credits), amount_due),
        "last reading's time": (t if lines else end, end),
    }
    wrong = [f"{name} {ours} (the chain: {theirs})" for name, (ours, theirs) in computed.items() if ours != theirs]
    if wrong:
        raise StatementMismatch(f"{where} does not add up to the chain's figures: {', '.join(wrong)}; if the API "
                                "answered this, rebuild its index with scripts/reindex.py (server stopped)")
    export = CreditLine("export", f"Export credit: {format_kwh(figures.export_wh)} exported", figures.export_credit)
    return Statement(
        account=account, chain=chain, period_id=figures.period_id, period_start=start, period_end=end,
        status=Status.PROVISIONAL if issue is None else Status.ISSUED,
        opening_import_wh=opening[0], closing_import_wh=imported, opening_export_wh=opening[1],
        closing_export_wh=exported, import_wh=figures.import_wh, export_wh=figures.export_wh,
        energy_charge=figures.import_cost, standing_charge=figures.standing_charge, credits=(export, *credits),
        amount_due=amount_due, days=day_lines, tariffs=tuple(_tariff_lines(schedule, start, end)),
        readings=tuple(lines), issue=issue, drawn_up_at=drawn_up_at, timezone=tz.key,
        restarts=tuple(sorted(restarts, key=lambda x: x.at)),
    )
