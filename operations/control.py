"""The operator's tools: list, register, deactivate, reactivate, exchange and reset meters, set the tariff,
close billing periods and draw up customer statements, straight against the chain.

``scripts/meterctl.py`` is a thin command line over this module. Everything here reads the
chain itself (views and ``eth_getLogs`` from the deployment's block), never the server's index,
so it works whether or not the server runs. ``Operations`` returns typed records; the pure
``render_*`` functions turn them into text, in the operator's time zone; nothing here prints.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from eth_utils import is_hex_address, to_checksum_address

from common import statement as document
from common import tariff as ref
from common.billing import Billing
from common.chain import ChainClient, Outcome
from common.customers import Customer, Customers, load_customers, save_customers
from common.demand_response import statement_credits
from common.deployment import load_deployment
from common.errors import (
    ChainError,
    ConfigError,
    DeploymentMissing,
    InvalidRequest,
    MeterInactive,
    SmartMeterError,
    UnknownMeter,
)
from common.events import ChainEvent, EventDecoder, unpack_record
from common.settings import Settings
from common.tariff import MAX_REGISTER_WH, describe_rule, format_kwh, format_pence, format_pounds
from meters.identity import MeterIdentity, list_meters, meter_dir
from operations.provisioning import provision

__all__ = [
    "Operations",
    "MeterRef",
    "MeterRow",
    "RegisteredMeter",
    "TariffVersion",
    "BillPeriod",
    "CloseResult",
    "Restart",
    "render_restart",
    "HalfHour",
    "render_half_hours",
    "Statement",
    "COMMAND",
    "parse_pence",
    "revert_name",
    "format_kwh",
    "format_pence",
    "format_time",
    "render_meters",
    "render_registered",
    "render_tariffs",
    "render_tariff_change",
    "render_close",
    "render_outcomes",
    "render_statement",
    "statement_json",
    "ref_bill",
]

#: How messages tell the operator to run the tool.
COMMAND = ".venv/bin/python scripts/meterctl.py"
#: Largest tariff rate the contract stores (uint32 millipence).
MAX_RATE_MILLIPENCE = 2**32 - 1

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: Names provisioning gives simulated meters; external meters may not take them.
_SIMULATED_NAME = re.compile(r"meter-(\d+)")
_REVERT = re.compile(r"refused the call: (\w+)\(")
_ZERO_ADDRESS = "0x" + "0" * 40


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class MeterRef:
    """A meter as the operator names it: its name when one is on record, and its address."""

    name: str | None
    address: str

    @property
    def label(self) -> str:
        """``meter-03 (0xAb..)``, or the bare address of a meter without a name."""
        return f"{self.name} ({self.address})" if self.name else self.address

    @property
    def arg(self) -> str:
        """What to type on the command line to name this meter."""
        return self.name or self.address


@dataclass(frozen=True)
class MeterRow:
    """One line of the meter list (amounts in micropence, times in unix seconds)."""

    meter: MeterRef
    region: str
    active: bool
    last_seq: int
    last_reading_at: int | None
    period_energy_wh: int
    amount_due: int
    #: The meter that took over this one's account in an exchange (this one is retired).
    replaced_by: str | None = None


@dataclass(frozen=True)
class Restart:
    """What a meter exchange or register reset did (``MeterExchanged``, ``RegisterReset``): the final read that
    closed the register (its energy priced into the open period) and the registers from then on."""

    kind: Literal["exchange", "reset"]
    meter: MeterRef
    new_meter: MeterRef | None
    last_seq: int
    final_at: int
    final_import_wh: int
    final_export_wh: int
    import_wh: int
    export_wh: int
    period: BillPeriod


@dataclass(frozen=True)
class RegisteredMeter:
    """A meter just registered on chain, with its customer record written."""

    meter: MeterRef
    region: str
    account_ref: str
    simulated: bool
    reregistered: bool = False


@dataclass(frozen=True)
class TariffVersion:
    """One tariff version from a ``TariffChanged`` event: its number, the import rate (flat, or a
    day-ahead fallback; 0 when banded), the standing charge (millipence) and the whole version."""

    version: int
    unit_rate: int
    standing_charge: int
    effective_from: int
    spec: ref.TariffVersion | None = None

    def describe(self) -> tuple[str, str]:
        """Import and export pricing in words."""
        if self.spec is None:
            return f"flat {format_pence(self.unit_rate)}/kWh", "none"
        clock = " (GMT)" if self.spec.clock == ref.CLOCK_GMT else ""
        return describe_rule(self.spec.import_rule) + clock, describe_rule(self.spec.export_rule)


@dataclass(frozen=True)
class BillPeriod:
    """A billing period, issued (``BillIssued``) or still open (``openBill``), in the contract's order:
    energy imported and exported (Wh), import cost, export credit, standing charge and the amount
    due (micropence; negative when in credit)."""

    period_id: int
    period_start: int
    period_end: int
    energy_wh: int
    export_wh: int
    energy_cost: int
    export_credit: int
    standing_charge: int
    amount_due: int

    @property
    def empty(self) -> bool:
        """Whether no reading was recorded in the period (the contract will not close it)."""
        return self.period_end == self.period_start


@dataclass(frozen=True)
class HalfHour:
    """One settlement period of a meter, computed from the chain: energy, prices and money."""

    number: int
    start: int
    import_wh: int
    export_wh: int
    band: int | None
    import_price: int
    export_price: int
    import_cost: int
    export_credit: int
    actual: bool


@dataclass(frozen=True)
class CloseResult:
    """What closing a meter's period did: the bill issued, or the open period left alone when empty."""

    meter: MeterRef
    period: BillPeriod
    issued: bool


@dataclass(frozen=True)
class Statement:
    """A customer's account overview (``meterctl statement`` as text or JSON): who, which meter, every issued bill,
    the open period and the tariffs. One period's full statement (PDF, CSV) is ``common.statement``'s model."""

    meter: MeterRef
    customer: Customer | None
    account_ref: str
    region: str
    active: bool
    issued: list[BillPeriod]
    open: BillPeriod
    tariffs: list[TariffVersion]
    drawn_up_at: int


# ---------------------------------------------------------------- pure helpers


def parse_pence(text: str, what: str, *, allow_zero: bool) -> int:
    """Parse an amount in pence (``24.67``) into millipence (``24670``), refusing what the contract cannot hold.

    Raises:
        InvalidRequest: not a number, more than three decimals, negative (or zero unless
            ``allow_zero``), or above the contract's 32-bit field.
    """
    try:
        pence = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidRequest(f"{what} {text!r} is not a number; give it in pence, e.g. 24.67") from None
    if not pence.is_finite():
        raise InvalidRequest(f"{what} {text!r} is not a number; give it in pence, e.g. 24.67")
    milli = pence * 1000
    if milli != milli.to_integral_value():
        raise InvalidRequest(
            f"{what} {text}p has more than 3 decimals; the contract counts thousandths of a penny: "
            f"round it to 3 decimals, e.g. {pence.quantize(Decimal('0.001'), ROUND_HALF_UP)}"
        )
    if milli < 0 or (milli == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        raise InvalidRequest(f"{what} {text}p is not allowed; it must be {bound} pence")
    if milli > MAX_RATE_MILLIPENCE:
        most = format_pence(MAX_RATE_MILLIPENCE)
        raise InvalidRequest(f"{what} {text}p is larger than the contract stores (at most {most}); check the value")
    return int(milli)


def ref_reason(message: str) -> str:
    """The reading rule a ``FinalReadRejected(meter, reason)`` revert names, in words (``stale_timestamp``)."""
    match = re.search(r"FinalReadRejected\(0x[0-9a-fA-F]{40}, (\d+)\)", message)
    return ref.RejectReason(int(match.group(1))).name.lower() if match else "see the contract's error"


def revert_name(err: ChainError) -> str | None:
    """The custom error a refused transaction reverted with (``EmptyBillingPeriod``), if any."""
    match = _REVERT.search(err.message)
    return match.group(1) if match else None


def format_time(timestamp: int, tz: ZoneInfo) -> str:
    """Unix seconds as local time to the minute: ``2025-01-12 14:03``."""
    return datetime.fromtimestamp(timestamp, tz).strftime("%Y-%m-%d %H:%M")


def _iso(timestamp: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(timestamp, tz).isoformat()


def _table(headers: list[str], rows: list[list[str]], align: str) -> list[str]:
    """Columns padded to their widest cell; ``align`` holds ``<`` or ``>`` per column."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        padded = [c.ljust(w) if a == "<" else c.rjust(w) for c, w, a in zip(cells, widths, align, strict=True)]
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def _period_cells(period: BillPeriod, tz: ZoneInfo) -> list[str]:
    return [
        str(period.period_id),
        format_time(period.period_start, tz),
        format_time(period.period_end, tz),
        format_kwh(period.energy_wh),
        format_pounds(period.energy_cost),
        format_kwh(period.export_wh),
        format_pounds(period.export_credit),
        format_pounds(period.standing_charge),
        format_pounds(period.amount_due),
    ]


_PERIOD_HEADERS = ["Period", "From", "To", "Import", "Import charge", "Export", "Export credit", "Standing charge",
                   "Amount due"]
_PERIOD_ALIGN = "<<<>>>>>>"


def _tariff_table(tariffs: list[TariffVersion], tz: ZoneInfo) -> list[str]:
    rows = [
        [str(t.version), format_time(t.effective_from, tz) if t.effective_from else "the start",
         format_pence(t.standing_charge) + "/day", *t.describe()]
        for t in tariffs
    ]
    return _table(["Version", "From", "Standing charge", "Import", "Export"], rows, "><><<")


def render_meters(rows: list[MeterRow], tz: ZoneInfo) -> str:
    """The meter list as a table, with a count and the time zone underneath."""
    if not rows:
        return f"no meters are registered on chain yet; add some with: {COMMAND} register --count N"
    cells = [
        [r.meter.name or "-", r.meter.address, r.region,
         f"retired: {r.replaced_by}" if r.replaced_by else "active" if r.active else "inactive", str(r.last_seq),
         format_time(r.last_reading_at, tz) if r.last_reading_at is not None else "never",
         format_kwh(r.period_energy_wh), format_pounds(r.amount_due)]
        for r in rows
    ]
    headers = ["Name", "Address", "Region", "Status", "Last seq", "Last reading", "Period energy", "Amount due"]
    active = sum(r.active for r in rows)
    footer = f"{len(rows)} meters on chain, {active} active; times in {tz.key}"
    return "\n".join([*_table(headers, cells, "<<<<><>>"), footer])


def render_registered(meters: list[RegisteredMeter], customers_file: str) -> str:
    """What registration did, one meter a line."""
    if not meters:
        return "no meter registered: every meter asked for is already on chain"
    lines = []
    for m in meters:
        kind = "simulated meter" if m.simulated else "external meter"
        again = " again (the chain did not know it)" if m.reregistered else ""
        lines.append(f"registered {kind} {m.meter.label} in region {m.region}{again}")
    lines.append(f"customer records with API keys are in {customers_file}")
    return "\n".join(lines)


def render_tariffs(current: TariffVersion, history: list[TariffVersion], tz: ZoneInfo) -> str:
    """The tariff in force, the versions coming, then every version the contract has had."""
    imports, exports = current.describe()
    since = format_time(current.effective_from, tz) if current.effective_from else "the start"
    lines = [f"tariff in force: version {current.version} since {since}: standing charge "
             f"{format_pence(current.standing_charge)}/day; import {imports}; export {exports}"]
    coming = [t for t in history if t.version > current.version]
    if coming:
        lines += ["", "Coming:", *("  " + row for row in _tariff_table(coming, tz))]
    else:
        lines.append("no version is scheduled after it")
    return "\n".join([*lines, "", f"History (times in {tz.key}):", *_tariff_table(history, tz)])


def render_tariff_change(before: TariffVersion, after: TariffVersion, tz: ZoneInfo) -> str:
    """What adding a version did: its number and start, and each flat rate changed (old -> new) or unchanged."""

    def rate(what: str, old: int, new: int, unit: str) -> str:
        if old == new:
            return f"  {what}: {format_pence(new)}/{unit} (unchanged)"
        return f"  {what}: {format_pence(old)}/{unit} -> {format_pence(new)}/{unit} (changed)"

    def export_rate(t: TariffVersion) -> int:
        return t.spec.export_rule.rate if t.spec is not None else 0

    return "\n".join([
        f"tariff version {after.version} added (version {before.version} is in force); it prices energy used from "
        f"{format_time(after.effective_from, tz)} on (energy used before keeps the prices it had)",
        rate("unit rate", before.unit_rate, after.unit_rate, "kWh"),
        rate("standing charge", before.standing_charge, after.standing_charge, "day"),
        rate("export rate", export_rate(before), export_rate(after), "kWh"),
    ])


def render_half_hours(meter: MeterRef, day: date, rows: list[HalfHour], tz: ZoneInfo) -> str:
    """A meter's settlement periods of one local day as a table, with the day's totals."""
    if not rows:
        return f"{meter.label}: no readings cover {day.isoformat()}"
    cells = [[str(r.number), format_time(r.start, tz)[11:], f"{r.import_wh:,}", f"{r.export_wh:,}",
              "-" if r.band is None else str(r.band), format_pence(r.import_price), format_pence(r.export_price),
              format_pounds(r.import_cost), format_pounds(r.export_credit), "actual" if r.actual else "estimated"]
             for r in rows]
    total = ["total", "", f"{sum(r.import_wh for r in rows):,}", f"{sum(r.export_wh for r in rows):,}", "", "", "",
             format_pounds(sum(r.import_cost for r in rows)), format_pounds(sum(r.export_credit for r in rows)), ""]
    headers = ["SP", "From", "Import Wh", "Export Wh", "Band", "Import p/kWh", "Export p/kWh", "Cost", "Credit",
               "Data"]
    head = f"{meter.label}: {day.isoformat()}, {len(rows)} settlement periods (times in {tz.key})"
    return "\n".join([head, *_table(headers, [*cells, total], "><>><>>>><")])


def render_close(result: CloseResult, tz: ZoneInfo) -> str:
    """One closing's outcome in a sentence."""
    p = result.period
    if not result.issued:
        return (f"{result.meter.label}: nothing to bill: no reading recorded since "
                f"{format_time(p.period_start, tz)}; period {p.period_id} stays open")
    return (f"{result.meter.label}: bill issued for period {p.period_id}, {format_time(p.period_start, tz)} to "
            f"{format_time(p.period_end, tz)}: {format_kwh(p.energy_wh)}, energy {format_pounds(p.energy_cost)} "
            f"+ standing {format_pounds(p.standing_charge)} = {format_pounds(p.amount_due)} due")


def render_outcomes(outcomes: list[Outcome]) -> str:
    """Whether each transaction sent is final, one line each; nothing when mined means final (``CONFIRMATIONS`` 0)."""
    lines = []
    for o in outcomes:
        if not o.final:
            lines.append(f"sent, not yet final: transaction {o.tx_hash} in block {o.block}; final once "
                         f"CONFIRMATIONS={o.depth} blocks are on top of it (a reorganisation may still remove it)")
        elif o.depth:
            lines.append(f"final: transaction {o.tx_hash} in block {o.block}, {o.confirmations} blocks on top "
                         f"(CONFIRMATIONS={o.depth})")
    return "\n".join(lines)


def render_restart(r: Restart, tz: ZoneInfo) -> str:
    """What an exchange or register reset did, in a few lines."""
    final = (f"final read at {format_time(r.final_at, tz)}: import {r.final_import_wh:,} Wh, export "
             f"{r.final_export_wh:,} Wh (after seq {r.last_seq}); its energy is on the open bill")
    if r.kind == "exchange" and r.new_meter is not None:
        head = (f"exchanged {r.meter.label} for {r.new_meter.label}: the new meter holds the account and open period "
                f"{r.period.period_id}; {r.meter.label} is retired and can never submit again")
        after = (f"the new meter's registers open at import {r.import_wh:,} Wh, export {r.export_wh:,} Wh; its first "
                 "seq is 1")
    else:
        head = f"reset the register of {r.meter.label}: open period {r.period.period_id} goes on"
        after = (f"its registers read import {r.import_wh:,} Wh, export {r.export_wh:,} Wh from then on; its next "
                 "seq is 1")
    bill = (f"open bill: import {format_kwh(r.period.energy_wh)}, {format_pounds(r.period.energy_cost)}; amount due "
            f"{format_pounds(r.period.amount_due)}")
    return "\n".join([head, final, after, bill])


def render_statement(st: Statement, tz: ZoneInfo) -> str:
    """The statement as text: money in pounds, energy in kWh, times in ``tz``."""
    customer = st.customer
    lines = [
        f"Statement for {st.meter.name or st.meter.address}, drawn up {format_time(st.drawn_up_at, tz)} "
        f"(times in {tz.key})",
        "",
        f"Customer:        {customer.name if customer and customer.name else '(no name on record)'}",
        f"Postal address:  {customer.address if customer and customer.address else '(no address on record)'}",
        f"Meter:           {st.meter.address}",
        f"Account ref:     {st.account_ref}",
        f"Region:          {st.region}",
        f"Status:          {'active' if st.active else 'deactivated'}",
        "",
        "Billing periods:",
    ]
    rows = [_period_cells(p, tz) for p in st.issued]
    if not st.open.empty:
        rows.append([f"{st.open.period_id} (open)", *_period_cells(st.open, tz)[1:]])
    if rows:
        lines += ["  " + row for row in _table(_PERIOD_HEADERS, rows, _PERIOD_ALIGN)]
    if st.open.empty:
        lines.append(f"  {st.open.period_id} (open) from {format_time(st.open.period_start, tz)}: no readings yet")
    billed = format_pounds(sum(p.amount_due for p in st.issued))
    bills = f"{len(st.issued)} bill" + ("" if len(st.issued) == 1 else "s")
    lines.append(f"  Total billed: {billed} in {bills}; open period so far: "
                 f"{format_pounds(st.open.amount_due)}")
    lines += ["", "Tariffs in force:", *("  " + row for row in _tariff_table(st.tariffs, tz))]
    return "\n".join(lines)


def _period_json(p: BillPeriod, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "periodId": p.period_id,
        "periodStart": _iso(p.period_start, tz),
        "periodEnd": _iso(p.period_end, tz),
        "energyWh": p.energy_wh,
        "exportWh": p.export_wh,
        "energyCost": p.energy_cost,
        "exportCredit": p.export_credit,
        "standingCharge": p.standing_charge,
        "amountDue": p.amount_due,
    }


def statement_json(st: Statement, tz: ZoneInfo) -> dict[str, Any]:
    """The statement as JSON: energy in Wh, money in micropence, rates in millipence, times ISO 8601 in ``tz``."""
    customer = st.customer
    return {
        "meter": {"name": st.meter.name, "address": st.meter.address, "accountRef": st.account_ref,
                  "region": st.region, "active": st.active},
        "customer": {"name": customer.name, "address": customer.address, "email": customer.email}
        if customer else None,
        "issued": [_period_json(p, tz) for p in st.issued],
        "open": _period_json(st.open, tz),
        "tariffs": [
            {"version": t.version, "unitRate": t.unit_rate, "standingCharge": t.standing_charge,
             "effectiveFrom": _iso(t.effective_from, tz)}
            for t in st.tariffs
        ],
        "units": {"energy": "Wh", "money": "micropence", "rates": "millipence per kWh and per day"},
        "drawnUpAt": _iso(st.drawn_up_at, tz),
    }


def _period(args: dict[str, Any]) -> BillPeriod:
    return BillPeriod(
        period_id=int(args["periodId"]),
        period_start=int(args["periodStart"]),
        period_end=int(args["periodEnd"]),
        energy_wh=int(args["importWh"]),
        export_wh=int(args["exportWh"]),
        energy_cost=int(args["importCost"]),
        export_credit=int(args["exportCredit"]),
        standing_charge=int(args["standingCharge"]),
        amount_due=int(args["amountDue"]),
    )


def _tariff(args: dict[str, Any]) -> TariffVersion:
    spec = ref.TariffVersion.from_event(args)
    return TariffVersion(int(args["version"]), spec.import_rule.rate, spec.standing_charge, spec.effective_from, spec)


# ---------------------------------------------------------------- the chain


def meter_names(data_dir: Path) -> dict[str, str]:
    """Lower-case address -> meter name, from the customer file and the meters' folders under ``data_dir``."""
    names = {c.meter.lower(): c.meter_name for c in load_customers(data_dir / "customers.json").values()
             if c.meter_name}
    for name in list_meters(data_dir):
        names[MeterIdentity.load(meter_dir(data_dir, name)).address.lower()] = name
    return names


class Operations:
    """One deployment seen by the operator: views and events for reading, the operator key for changes.

    Construction checks that the chain answers, has the configured chain id and holds the
    recorded contract, so every later failure is about the operation itself. Meters are named
    by ``meter-03``-style names (from ``DATA_DIR/meters/<name>/meter.json`` or the customer
    file's ``meter_name``) or by 0x address.

    Every change returns once its transaction is final (``CONFIRMATIONS`` blocks on top, its
    receipt checked again there; a reorganisation that removed it has the same transaction mined
    again), what it reports read from that final receipt; with ``wait=False`` once it is mined.
    ``transactions`` lists what was sent, with how deep each was when the change returned.
    """

    def __init__(self, settings: Settings, wait: bool = True) -> None:
        self.settings = settings
        self.deployment = load_deployment(settings)
        client = ChainClient(settings, until="final" if wait else "mined")
        chain_id = client.check()
        if chain_id != self.deployment.chain_id:
            raise ConfigError(f"the node at {settings.chain_rpc_url} has chain id {chain_id}, not "
                              f"CHAIN_ID={self.deployment.chain_id}; point CHAIN_RPC_URL at the right node")
        if not client.w3.eth.get_code(to_checksum_address(self.deployment.address)):
            raise DeploymentMissing(f"no contract at {self.deployment.address} on the chain at "
                                    f"{settings.chain_rpc_url} (was the chain reset?); "
                                    "run: .venv/bin/python scripts/deploy.py")
        self.billing = Billing(client, self.deployment)
        self.decoder = EventDecoder(self.deployment.abi)

    @property
    def transactions(self) -> list[Outcome]:
        """The transactions sent so far, each with its block and how deep it was when its change returned."""
        return list(self.billing.client.outcomes)

    @property
    def customers_path(self) -> Path:
        """The off-chain customer file."""
        return self.settings.data_dir / "customers.json"

    # ------------------------------------------------------------ naming

    def _names(self) -> dict[str, str]:
        """Lower-case address -> name, from the meters' folders and the customer file."""
        return meter_names(self.settings.data_dir)

    def _address_of(self, name: str) -> str | None:
        if _NAME.fullmatch(name):
            directory = meter_dir(self.settings.data_dir, name)
            if (directory / "meter.json").exists():
                return MeterIdentity.load(directory).address
        for record in load_customers(self.customers_path).values():
            if record.meter_name == name:
                return record.meter
        return None

    def resolve(self, meter: str) -> MeterRef:
        """The registered meter a name or 0x address stands for.

        Raises:
            UnknownMeter: no meter has this name, or the chain does not know this meter.
        """
        text = meter.strip()
        if _ADDRESS.fullmatch(text):
            address = to_checksum_address(text)
            ref = MeterRef(self._names().get(address.lower()), address)
        else:
            found = self._address_of(text)
            if found is None:
                raise UnknownMeter(f"no meter is named {text!r} in {self.settings.data_dir}; give a meter's name "
                                   f"or 0x address as listed by: {COMMAND} meters")
            ref = MeterRef(text, to_checksum_address(found))
        if not self.billing.meter(ref.address).registered:
            raise UnknownMeter(f"{ref.label} is not registered on this chain; list the registered meters with: "
                               f"{COMMAND} meters")
        return ref

    def _refusal(self, err: ChainError, ref: MeterRef | None = None) -> SmartMeterError:
        """The contract's refusal as a plain sentence (the original error when it is not a common one)."""
        name = revert_name(err)
        if name == "AccessControlUnauthorizedAccount":
            return ChainError(f"the operator key does not hold OPERATOR_ROLE on the contract at "
                              f"{self.deployment.address}; set OPERATOR_KEY to the key the deployment granted it to")
        if name == "TooSoon":
            return InvalidRequest(f"{err.message}: a tariff or price may start no sooner than the contract's "
                                  "skew window ahead (5 minutes by default), so that no recorded reading is repriced")
        if name == "NotPeriodBoundary":
            return InvalidRequest(f"{err.message}: tariffs and prices start on the hour or half hour")
        if name == "NotAfterLastVersion":
            return InvalidRequest(f"{err.message}: a new version must start after the last one scheduled (see them "
                                  f"with: {COMMAND} tariff); to replace a later one not yet in force, withdraw it "
                                  f"first: {COMMAND} tariff --withdraw VERSION")
        if name in ("NotNewestVersion", "NotLastClockChange"):
            return InvalidRequest(f"{err.message}: only the newest version (or the last clock change) can be "
                                  "withdrawn, newest first")
        if ref is None:
            return err
        if name == "MeterNotActive":
            return MeterInactive(f"{ref.label} is already deactivated; to accept its readings again run: "
                                 f"{COMMAND} reactivate {ref.arg}")
        if name == "MeterAlreadyActive":
            return ChainError(f"{ref.label} is already active; nothing was changed")
        if name == "MeterAlreadyRegistered":
            return ChainError(f"{ref.address} is already registered on chain; see it with: {COMMAND} meters")
        if name == "UnknownMeter":
            return UnknownMeter(f"{ref.label} is not registered on this chain; list the registered meters with: "
                                f"{COMMAND} meters")
        if name == "MeterRetired":
            return MeterInactive(f"{ref.label} was exchanged for another meter and is retired for good; see it with: "
                                 f"{COMMAND} meters")
        if name == "FinalReadRejected":
            reason = ref_reason(err.message)
            return InvalidRequest(f"the final read of {ref.label} was refused: {reason}; it must be at or after the "
                                  "last reading (the same registers when at its time), not in the future, with "
                                  "registers not below the last reading's and a plausible power in between")
        return err

    # ------------------------------------------------------------ events

    def _logs(self, event: str, meter: str | None = None,
              to_block: int | Literal["latest"] = "latest") -> list[ChainEvent]:
        """Every ``event`` of this deployment (of one meter when given) up to ``to_block``, in chain order,
        via ``eth_getLogs``."""
        topics = [self.decoder.topic(event)]
        if meter is not None:
            topics.append("0x" + "0" * 24 + meter.removeprefix("0x").lower())
        raw = self.billing.client.w3.eth.get_logs({
            "address": to_checksum_address(self.deployment.address),
            "topics": topics,
            "fromBlock": self.deployment.block,
            "toBlock": to_block,
        })
        events = [e for e in (self.decoder.decode(log) for log in raw) if e is not None and e.name == event]
        return sorted(events, key=lambda e: e.position)

    def _receipt_event(self, receipt: Any, event: str) -> ChainEvent:
        for log in receipt["logs"]:
            decoded = self.decoder.decode(log)
            if decoded is not None and decoded.name == event:
                return decoded
        raise ChainError(f"the transaction succeeded but carries no {event} event; check the deployment")

    # ------------------------------------------------------------ meters

    def _open_period(self, address: str, block: int | Literal["latest"] = "latest") -> BillPeriod:
        raw = self.billing.contract.functions.openBill(to_checksum_address(address)).call(block_identifier=block)
        return BillPeriod(*(int(v) for v in raw))

    def meters(self) -> list[MeterRow]:
        """Every meter registered on chain, in registration order, with its open period's totals."""
        names = self._names()
        replaced = {e.args["meter"].lower(): e.args["newMeter"] for e in self._logs("MeterExchanged")}
        rows = []
        for address in self.billing.meters():
            view = self.billing.meter(address)
            bill = self.billing.bill(address)
            rows.append(MeterRow(
                meter=MeterRef(names.get(address.lower()), view.address),
                region=view.region,
                active=view.active,
                last_seq=view.last_seq,
                last_reading_at=view.last_timestamp if view.last_seq else None,
                period_energy_wh=bill.period_energy_wh,
                amount_due=bill.amount_due,
                replaced_by=replaced.get(address.lower()),
            ))
        return rows

    def register_simulated(self, count: int) -> list[RegisteredMeter]:
        """Provision ``count`` new simulated meters after the existing ones, registered with no history.

        Provisioning also registers again any existing meter the chain does not know (after a
        chain reset); those come back with ``reregistered`` set.
        """
        if count < 1:
            raise InvalidRequest(f"--count {count} registers nothing; give how many new meters to add (1 or more)")
        numbers = [int(m.group(1)) for name in list_meters(self.settings.data_dir)
                   if (m := _SIMULATED_NAME.fullmatch(name))]
        report = provision(self.settings, max(numbers, default=0) + count, history_days=0, client=self.billing.client)
        out = []
        for name in [*report.reregistered, *report.created]:
            identity = MeterIdentity.load(meter_dir(self.settings.data_dir, name))
            out.append(RegisteredMeter(MeterRef(name, identity.address), identity.region, identity.account_ref,
                                       simulated=True, reregistered=name in report.reregistered))
        return sorted(out, key=lambda m: m.meter.name or "")

    def register_external(
        self,
        address: str,
        region: str,
        *,
        name: str | None = None,
        customer_name: str = "",
        postal_address: str = "",
        email: str = "",
        opening_wh: int = 0,
    ) -> RegisteredMeter:
        """Register a meter whose key the operator does not hold, and write its customer record.

        The record gets a fresh account reference and API key; the chain gets only the address,
        the account reference, the region and the opening register value.

        Raises:
            InvalidRequest: a malformed address, region, name or opening value, or a name or
                address already on record.
            ChainError: the chain already knows the address.
        """
        text = address.strip()
        if not _ADDRESS.fullmatch(text) or text.lower() == _ZERO_ADDRESS:
            raise InvalidRequest(f"--address {address!r} is not a meter address; give 0x and 40 hex digits")
        checksummed = to_checksum_address(text)
        region = region.strip()
        if not region or len(region.encode()) > 32:
            raise InvalidRequest(f"--region {region!r} must be 1 to 32 bytes of text, e.g. north")
        if not 0 <= opening_wh <= MAX_REGISTER_WH:
            raise InvalidRequest(f"--opening-wh {opening_wh} must be between 0 and {MAX_REGISTER_WH}")
        meter_name = name.strip() if name else f"ext-{checksummed[2:10].lower()}"
        if not _NAME.fullmatch(meter_name):
            raise InvalidRequest(f"--name {meter_name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
        if _SIMULATED_NAME.fullmatch(meter_name):
            raise InvalidRequest(f"--name {meter_name!r} is kept for simulated meters; choose another name")
        customers = load_customers(self.customers_path)
        existing = customers.get(checksummed.lower())
        if existing is not None:
            raise InvalidRequest(f"{checksummed} already has a customer record as {existing.meter_name!r}; "
                                 f"see it with: {COMMAND} meters")
        if self._address_of(meter_name) is not None:
            raise InvalidRequest(f"the name {meter_name!r} is taken; choose another --name")
        ref = MeterRef(meter_name, checksummed)
        account_ref = "0x" + secrets.token_hex(32)
        try:
            self.billing.register_meter(checksummed, bytes.fromhex(account_ref[2:]), region, opening_wh)
        except ChainError as err:
            raise self._refusal(err, ref) from err
        customers[checksummed.lower()] = Customer(
            meter=checksummed, meter_name=meter_name, account_ref=account_ref, name=customer_name,
            address=postal_address, email=email, api_key=secrets.token_urlsafe(24), region=region,
        )
        save_customers(self.customers_path, customers)
        return RegisteredMeter(ref, region, account_ref, simulated=False)

    def gateways(self) -> list[str]:
        """The addresses that may submit readings (hold GATEWAY_ROLE)."""
        return self.billing.gateways()

    def set_gateway(self, address: str, allowed: bool) -> str:
        """Let another gateway deployment's key submit readings (or no longer); its checksum address."""
        if not is_hex_address(address):
            raise InvalidRequest(f"{address!r} is not a 0x address of 40 hex digits; give the gateway key's address "
                                 "(the server logs it at start as gateway=0x...)")
        try:
            self.billing.set_gateway(address, allowed)
        except ChainError as err:
            if revert_name(err) == "AccessControlUnauthorizedAccount":
                raise ChainError(f"the admin key does not hold the admin role on the contract at "
                                 f"{self.deployment.address}; set ADMIN_KEY to the key that deployed it") from err
            raise
        return to_checksum_address(address)

    def deactivate(self, meter: str) -> MeterRef:
        """Deactivate a meter: the contract rejects its readings until it is reactivated."""
        ref = self.resolve(meter)
        try:
            self.billing.deactivate_meter(ref.address)
        except ChainError as err:
            raise self._refusal(err, ref) from err
        return ref

    def reactivate(self, meter: str) -> MeterRef:
        """Reactivate a deactivated meter."""
        ref = self.resolve(meter)
        try:
            self.billing.reactivate_meter(ref.address)
        except ChainError as err:
            raise self._refusal(err, ref) from err
        return ref

    # ------------------------------------------------------------ exchanges and register resets

    def _final_read(self, ref: MeterRef, final_import_wh: int | None, final_export_wh: int | None,
                    final_at: int | None) -> tuple[int, int, int]:
        """The final read (import, export, time): the last reading's where nothing is given, else the values given
        at ``final_at`` (default: the chain's time now; registers not given stay as last read)."""
        view = self.billing.meter(ref.address)
        if final_import_wh is None and final_export_wh is None and final_at is None:
            return view.last_energy_wh, view.last_export_wh, view.last_timestamp
        values = (view.last_energy_wh if final_import_wh is None else final_import_wh,
                  view.last_export_wh if final_export_wh is None else final_export_wh)
        for what, wh in zip(("--final-import-wh", "--final-export-wh"), values, strict=True):
            if not 0 <= wh <= MAX_REGISTER_WH:
                raise InvalidRequest(f"{what} {wh} must be between 0 and {MAX_REGISTER_WH}")
        return (*values, self.billing.now() if final_at is None else final_at)

    def _restart(self, kind: Literal["exchange", "reset"], ref: MeterRef, receipt: Any) -> Restart:
        event = self._receipt_event(receipt, "MeterExchanged" if kind == "exchange" else "RegisterReset")
        args, final = event.args, unpack_record(int(event.args["finalRecord"]))
        if kind == "exchange":
            new: MeterRef | None = MeterRef(self._names().get(args["newMeter"].lower()), args["newMeter"])
            opening = (int(args["openingImportWh"]), int(args["openingExportWh"]))
        else:
            new, opening = None, (int(args["importWh"]), int(args["exportWh"]))
        return Restart(kind, ref, new, final["seq"], final["timestamp"], final["energyWh"], final["exportWh"],
                       *opening, self._open_period((new or ref).address, event.block))

    def exchange(self, meter: str, new_address: str, *, final_import_wh: int | None = None,
                 final_export_wh: int | None = None, final_at: int | None = None, opening_import_wh: int = 0,
                 opening_export_wh: int = 0) -> Restart:
        """Exchange a meter: ``new_address`` takes over its account and open period after its final read, and the
        old meter is retired. The customer record moves to the new meter (with its name and API key).

        Raises:
            InvalidRequest: a malformed address or register, or a final read the contract refuses.
            ChainError: the new address is already registered, or the old meter is retired.
        """
        ref = self.resolve(meter)
        text = new_address.strip()
        if not _ADDRESS.fullmatch(text) or text.lower() == _ZERO_ADDRESS:
            raise InvalidRequest(f"{new_address!r} is not a meter address; give 0x and 40 hex digits")
        new = to_checksum_address(text)
        for what, wh in (("--opening-import-wh", opening_import_wh), ("--opening-export-wh", opening_export_wh)):
            if not 0 <= wh <= MAX_REGISTER_WH:
                raise InvalidRequest(f"{what} {wh} must be between 0 and {MAX_REGISTER_WH}")
        final = self._final_read(ref, final_import_wh, final_export_wh, final_at)
        try:
            receipt = self.billing.exchange_meter(ref.address, new, final[0], final[1], final[2], opening_import_wh,
                                                  opening_export_wh)
        except ChainError as err:
            if revert_name(err) == "MeterAlreadyRegistered":
                raise ChainError(f"{new} is already registered on chain; an exchange needs a new meter") from err
            raise self._refusal(err, ref) from err
        customers = load_customers(self.customers_path)
        record = customers.pop(ref.address.lower(), None)
        if record is not None:
            customers[new.lower()] = replace(record, meter=new)
            save_customers(self.customers_path, customers)
        return self._restart("exchange", ref, receipt)

    def reset_register(self, meter: str, *, final_import_wh: int | None = None, final_export_wh: int | None = None,
                       final_at: int | None = None, import_wh: int = 0, export_wh: int = 0) -> Restart:
        """Reset a meter's register and sequence after its final read: its registers read ``import_wh`` and
        ``export_wh`` from then on and its next seq is 1; the open period goes on.

        Raises:
            InvalidRequest: a register out of range, or a final read the contract refuses.
        """
        ref = self.resolve(meter)
        for what, wh in (("--import-wh", import_wh), ("--export-wh", export_wh)):
            if not 0 <= wh <= MAX_REGISTER_WH:
                raise InvalidRequest(f"{what} {wh} must be between 0 and {MAX_REGISTER_WH}")
        final = self._final_read(ref, final_import_wh, final_export_wh, final_at)
        try:
            receipt = self.billing.reset_register(ref.address, *final, import_wh, export_wh)
        except ChainError as err:
            raise self._refusal(err, ref) from err
        return self._restart("reset", ref, receipt)

    # ------------------------------------------------------------ tariff

    def tariff(self) -> TariffVersion:
        """The tariff version in force now, from the contract's views."""
        fn = self.billing.contract.functions
        number = int(fn.tariffVersionAt(self.billing.now()).call())
        spec = ref.TariffVersion.from_struct(fn.tariffVersion(number).call())
        return TariffVersion(number, spec.import_rule.rate, spec.standing_charge, spec.effective_from, spec)

    def _tariff_events(self) -> list[ChainEvent]:
        """The ``TariffChanged`` events of the versions not withdrawn since (``TariffWithdrawn``), in chain order."""
        kept: list[ChainEvent] = []
        for event in sorted(self._logs("TariffChanged") + self._logs("TariffWithdrawn"), key=lambda e: e.position):
            if event.name == "TariffChanged":
                kept.append(event)
            elif kept and int(kept[-1].args["version"]) == int(event.args["version"]):
                kept.pop()
        return kept

    def tariff_history(self) -> list[TariffVersion]:
        """Every tariff the contract has had, oldest first, from its ``TariffChanged`` events (less those
        withdrawn before they took effect)."""
        return [_tariff(e.args) for e in self._tariff_events()]

    def withdraw_tariff(self, version: int) -> TariffVersion:
        """Withdraw the newest tariff version before it takes effect; returns it.

        Raises:
            InvalidRequest: ``version`` is not the newest, or it starts too soon (it may price readings already).
        """
        history = self.tariff_history()
        newest = history[-1]
        if version != newest.version or version == 1:
            raise InvalidRequest(f"only the newest tariff version ({newest.version}) can be withdrawn, and never "
                                 "the opening one: withdraw the newer ones first")
        try:
            self.billing.withdraw_tariff(version)
        except ChainError as err:
            raise self._refusal(err) from err
        return newest

    def set_tariff(self, unit_rate_pence: str | None = None, standing_charge_pence: str | None = None,
                   export_rate_pence: str | None = None, effective_from: int = 0) -> TariffVersion:
        """Add a flat tariff given in pence per kWh imported, per day and per kWh exported (at most 3
        decimals each); a rate not given keeps its value in the newest version (in force or coming).

        It starts at ``effective_from`` (a half-hour boundary, unix seconds) or, with 0, at the first
        half hour the contract allows (about five minutes ahead, to the next half hour): energy
        used before it keeps the prices it had.

        Raises:
            InvalidRequest: no rate given, a value the contract cannot hold, a rate left out while the
                tariff in force is not flat, or nothing that would change, all before any transaction.
        """
        if unit_rate_pence is None and standing_charge_pence is None and export_rate_pence is None:
            raise InvalidRequest("give a new unit rate, standing charge or export rate (or several), in pence")
        new_unit = None if unit_rate_pence is None else parse_pence(unit_rate_pence, "unit rate", allow_zero=False)
        new_standing = (None if standing_charge_pence is None
                        else parse_pence(standing_charge_pence, "standing charge", allow_zero=True))
        new_export = (None if export_rate_pence is None
                      else parse_pence(export_rate_pence, "export rate", allow_zero=True))
        current = self.tariff_history()[-1]
        spec = current.spec
        flat = spec is None or (spec.import_rule.kind == ref.FLAT and spec.export_rule.kind == ref.FLAT)
        if not flat and (new_unit is None or new_export is None):
            raise InvalidRequest(f"the newest tariff (version {current.version}) is not flat: give the unit rate "
                                 "and the export rate, or a tariff file with --file")
        unit_rate = current.unit_rate if new_unit is None else new_unit
        standing = current.standing_charge if new_standing is None else new_standing
        in_force_export = spec.export_rule.rate if spec is not None else 0
        export = in_force_export if new_export is None else new_export
        if flat and (unit_rate, standing, export) == (current.unit_rate, current.standing_charge, in_force_export):
            raise InvalidRequest(
                f"the newest tariff (version {current.version}) is already {format_pence(unit_rate)}/kWh, "
                f"{format_pence(standing)}/day and {format_pence(export)}/kWh exported; nothing to change")
        return self.set_tariff_version(ref.TariffVersion.flat(unit_rate, standing, effective_from, export))

    def set_tariff_version(self, version: ref.TariffVersion) -> TariffVersion:
        """Add any tariff version (flat, banded or day-ahead import and export); with ``effective_from`` 0 it
        starts at the first half hour the contract allows that is after the newest version's start."""
        if version.effective_from == 0:
            period = ref.PERIOD_SECONDS
            # A minute's margin: the transaction is mined a moment after the clock is read.
            earliest = -(-(self.billing.now() + self.settings.max_future_skew + 60) // period) * period
            newest = self.tariff_history()[-1].effective_from
            version = replace(version, effective_from=max(earliest, newest + period))
        try:
            receipt = self.billing.set_tariff(version)
        except ChainError as err:
            raise self._refusal(err) from err
        return _tariff(self._receipt_event(receipt, "TariffChanged").args)

    def withdraw_clock_change(self, at: int) -> tuple[int, int]:
        """Withdraw the last published UK clock change (at unix second ``at``) before it takes effect; returns
        (at, minutes ahead of UTC it would have set)."""
        try:
            receipt = self.billing.withdraw_clock_change(at)
        except ChainError as err:
            raise self._refusal(err) from err
        args = self._receipt_event(receipt, "ClockChangeWithdrawn").args
        return int(args["at"]), int(args["offsetMinutes"])

    def publish_prices(self, start: int, import_prices: list[int], export_prices: list[int]) -> int:
        """Publish day-ahead prices for consecutive half hours from ``start``; returns how many periods."""
        try:
            self.billing.publish_day_ahead(start, import_prices, export_prices)
        except ChainError as err:
            raise self._refusal(err) from err
        return max(len(import_prices), len(export_prices))

    # ------------------------------------------------------------ billing periods

    def _close(self, ref: MeterRef) -> CloseResult:
        try:
            receipt = self.billing.close_billing_period(ref.address)
        except ChainError as err:
            if revert_name(err) == "EmptyBillingPeriod":
                return CloseResult(ref, self._open_period(ref.address), issued=False)
            raise self._refusal(err, ref) from err
        return CloseResult(ref, _period(self._receipt_event(receipt, "BillIssued").args), issued=True)

    def close_period(self, meter: str) -> CloseResult:
        """Close a meter's open period at its last reading and issue the bill (not when nothing was read)."""
        return self._close(self.resolve(meter))

    def close_all(self) -> list[CloseResult]:
        """Close every registered meter's open period; meters with nothing to bill are left open."""
        names = self._names()
        return [self._close(MeterRef(names.get(a.lower()), to_checksum_address(a))) for a in self.billing.meters()]

    # ------------------------------------------------------------ statements

    def half_hours(self, meter: str, day: date) -> tuple[MeterRef, list[HalfHour]]:
        """A meter's settlement periods of one local day (46, 48 or 50), straight from the chain: each
        reading's energy split over the half hours as the contract splits it, priced as it prices them."""
        who = self.resolve(meter)
        tz = self.settings.tz
        start = int(datetime.combine(day, datetime.min.time(), tzinfo=tz).timestamp())
        end = int(datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=tz).timestamp())
        wanted = {sp.period: sp for sp in ref.settlement_periods(start, end, tz)}
        registered = self._logs("MeterRegistered", who.address)
        if not registered:
            raise UnknownMeter(f"{who.label} is not registered on this chain")
        t, imported, exported = (int(registered[0].args["openedAt"]), int(registered[0].args["openingWh"]), 0)
        schedule = self.billing.schedule()
        totals: dict[int, list[int]] = {}
        for event in self._logs("ReadingRecorded", who.address):
            ts, wh, ex = int(event.args["timestamp"]), int(event.args["energyWh"]), int(event.args["exportWh"])
            if ts > start and t < end:
                for p, part_in, part_out in ref.split_pair(t, ts, wh - imported, ex - exported):
                    if p in wanted:
                        row = totals.setdefault(p, [0, 0, 0])
                        row[0] += part_in
                        row[1] += part_out
                        row[2] = max(row[2], ts - t)
            t, imported, exported = ts, wh, ex
        rows = []
        for p in sorted(totals):
            part_in, part_out, longest = totals[p]
            price_in, price_out = schedule.prices(p)
            rows.append(HalfHour(wanted[p].number, p * ref.PERIOD_SECONDS, part_in, part_out, schedule.band_of(p)[0],
                                 price_in, price_out, part_in * price_in, part_out * price_out,
                                 ref.is_actual(longest, p, t)))
        return who, rows

    def statement(self, meter: str) -> Statement:
        """A customer's statement, entirely from the chain but for the customer's details.

        Issued bills come from ``BillIssued`` events, the open period from ``openBill``, and the
        tariffs are the one in force when the meter was registered and every one since.
        """
        ref = self.resolve(meter)
        view = self.billing.meter(ref.address)
        registered = self._logs("MeterRegistered", ref.address)
        tariff_events = self._tariff_events()
        if registered:
            since = registered[0].position
            earlier = [e for e in tariff_events if e.position < since]
            tariff_events = earlier[-1:] + [e for e in tariff_events if e.position > since]
        return Statement(
            meter=ref,
            customer=Customers(self.customers_path).by_meter(ref.address),
            account_ref=view.account_ref,
            region=view.region,
            active=view.active,
            issued=[_period(e.args) for e in self._logs("BillIssued", ref.address)],
            open=self._open_period(ref.address),
            tariffs=[_tariff(e.args) for e in tariff_events],
            drawn_up_at=int(time.time()),
        )

    def statement_document(self, meter: str, period: int | None = None) -> document.Statement:
        """The statement of one billing period (default: the open one, provisional), straight from the chain.

        Everything is read as of one block, so readings mined meanwhile cannot make the open period's
        figures and its readings disagree: the issued bill from its ``BillIssued`` event, the open one
        from ``openBill``, the readings from ``ReadingRecorded``, the registers at the period's start
        from the reading before it (or the registration), and the prices from the published schedule.

        Raises:
            UnknownMeter: no such meter.
            InvalidRequest: the meter has no billing period ``period``.
        """
        ref = self.resolve(meter)
        w3 = self.billing.client.w3
        block = int(w3.eth.block_number)
        view = self.billing.meter(ref.address)
        lineage = self._lineage(ref.address, block)
        registered = self._logs("MeterRegistered", lineage[-1], block)
        if not registered:
            raise UnknownMeter(f"{ref.label} is not registered on this chain")
        opened = registered[0].args
        current = self._open_period(ref.address, block)
        wanted = current.period_id if period is None else period
        issue: document.Issue | None = None
        if wanted == current.period_id:
            figures = current
        else:
            found = [e for m in lineage for e in self._logs("BillIssued", m, block)
                     if int(e.args["periodId"]) == wanted]
            if not found:
                raise InvalidRequest(f"{ref.label} has no billing period {wanted}: its periods are 1 to "
                                     f"{current.period_id} ({current.period_id} is open)")
            figures = _period(found[0].args)
            issue = document.Issue(found[0].tx_hash, int(w3.eth.get_block(found[0].block)["timestamp"]))
        recorded = [document.RecordedReading(int(e.args["seq"]), int(e.args["timestamp"]), int(e.args["energyWh"]),
                                              int(e.args["exportWh"]), e.block, e.tx_hash)
                    for m in lineage for e in self._logs("ReadingRecorded", m, block)]
        finals, restarts = self._restarts(lineage, block, {r.timestamp for r in recorded} | {int(opened["openedAt"])})
        readings = sorted([*recorded, *finals], key=lambda r: r.timestamp)
        # The registers at the period's start: the registration's, then each reading's and restart's up to it.
        opening = (int(opened["openingWh"]), 0)
        steps: list[document.RecordedReading | document.MeterRestart] = [*readings, *restarts]
        for step in sorted(steps, key=lambda x: (x.timestamp if isinstance(x, document.RecordedReading) else x.at,
                                                 isinstance(x, document.MeterRestart))):
            if isinstance(step, document.MeterRestart):
                if step.at < figures.period_start:
                    opening = (step.import_register_wh, step.export_register_wh)
            elif step.timestamp <= figures.period_start:
                opening = (step.import_register_wh, step.export_register_wh)
        customer = Customers(self.customers_path).by_meter(ref.address)
        credits = statement_credits(self.billing.client, self.deployment, ref.address, figures.period_id)
        return document.build_statement(
            account=document.Account(ref.address, ref.name, view.account_ref, view.region,
                                      customer.name if customer else "", customer.address if customer else ""),
            chain=document.ChainPlace(self.deployment.chain_id, to_checksum_address(self.deployment.address)),
            figures=ref_bill(figures), amount_due=figures.amount_due - sum(c.amount for c in credits), issue=issue,
            opening=opening, readings=[r for r in readings if figures.period_start < r.timestamp <= figures.period_end],
            schedule=self.billing.schedule(), tz=self.settings.tz, drawn_up_at=int(time.time()), credits=credits,
            restarts=[c for c in restarts if figures.period_start <= c.at <= figures.period_end],
        )

    def _lineage(self, address: str, block: int) -> list[str]:
        """``address`` and the meters it replaced in exchanges, newest first (one account's meters)."""
        replaced = {e.args["newMeter"].lower(): e.args["meter"] for e in self._logs("MeterExchanged", None, block)}
        lineage = [address]
        while lineage[-1].lower() in replaced and replaced[lineage[-1].lower()] not in lineage:
            lineage.append(replaced[lineage[-1].lower()])
        return lineage

    def _restarts(self, lineage: list[str], block: int, read_at: set[int]
                  ) -> tuple[list[document.RecordedReading], list[document.MeterRestart]]:
        """The final reads that added time (those at a reading's time add nothing) and the restarts of the meters
        of one account, from their ``MeterExchanged`` and ``RegisterReset`` events."""
        events = sorted((e for m in lineage for name in ("MeterExchanged", "RegisterReset")
                         for e in self._logs(name, m, block)), key=lambda e: e.position)
        finals, restarts = [], []
        for e in events:
            final = unpack_record(int(e.args["finalRecord"]))
            kind = "exchange" if e.name == "MeterExchanged" else "reset"
            if final["timestamp"] not in read_at:
                finals.append(document.RecordedReading(final["seq"], final["timestamp"], final["energyWh"],
                                                        final["exportWh"], e.block, e.tx_hash, kind))
                read_at.add(final["timestamp"])
            opening = ((int(e.args["openingImportWh"]), int(e.args["openingExportWh"])) if kind == "exchange"
                       else (int(e.args["importWh"]), int(e.args["exportWh"])))
            restarts.append(document.MeterRestart(kind, final["timestamp"], e.args.get("newMeter") or e.args["meter"],
                                                  *opening, e.block, e.tx_hash))
        return finals, restarts


def ref_bill(p: BillPeriod) -> ref.OpenBill:
    """A billing period as the reference arithmetic names its figures."""
    return ref.OpenBill(p.period_id, p.period_start, p.period_end, p.energy_wh, p.export_wh, p.energy_cost,
                        p.export_credit, p.standing_charge)
