"""The tariff and bill arithmetic in Python: the reference the contract is tested against.

One definition of the rules (docs/tariffs.md explains them): settlement periods are UTC half
hours; the energy between two readings is split over the periods it spans in proportion to
time by cumulative floors (``split``), so the parts add up to the register delta exactly; each
part is priced at its period's price (``Schedule.prices``: flat, a daily band table in GMT or UK
clock time, or day-ahead prices with a fallback), Wh x millipence/kWh = micropence, exact. The
standing charge depends only on time and is rounded down once per billing period
(``standing_charge``). Units match the contract: Wh, millipence per kWh and per day,
micropence.
"""

from __future__ import annotations

import bisect
import datetime as dt
import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NewType
from zoneinfo import ZoneInfo

from common import errors

__all__ = [
    "Wh",
    "Micropence",
    "RejectReason",
    "PriceRule",
    "TariffVersion",
    "ClockTable",
    "Schedule",
    "MeterLedger",
    "OpenBill",
    "split",
    "split_pair",
    "accrue",
    "final_read",
    "restart",
    "standing_charge",
    "check_reading",
    "overflows",
    "uk_clock_changes",
    "period_of",
    "ACTUAL_MAX_INTERVAL",
    "SettlementPeriod",
    "settlement_periods",
    "is_actual",
    "format_pounds",
    "format_pence",
    "format_kwh",
    "band_names",
    "describe_rule",
    "REJECT_ERRORS",
    "USES_UP_SEQ",
    "MAX_SEQ",
    "MAX_TIMESTAMP",
    "MAX_REGISTER_WH",
    "PERIOD_SECONDS",
    "FLAT",
    "BANDED",
    "DAY_AHEAD",
    "CLOCK_GMT",
    "CLOCK_LOCAL",
]

Wh = NewType("Wh", int)
Micropence = NewType("Micropence", int)

SECONDS_PER_DAY = 86_400
PERIOD_SECONDS = 1_800
PERIODS_PER_DAY = 48
MICRO_PER_MILLI = 1_000
MAX_SEQ = 2**32 - 1
MAX_TIMESTAMP = 2**32 - 1
MAX_REGISTER_WH = 2**48 - 1
MAX_PERIOD_IMPORT_COST = 2**48 - 1
MAX_PERIOD_EXPORT_CREDIT = 2**47 - 1
MAX_PRICE = 2**32 - 2
BANDS = 8

FLAT, BANDED, DAY_AHEAD = 0, 1, 2
CLOCK_GMT, CLOCK_LOCAL = 0, 1
KIND_NAMES = {FLAT: "flat", BANDED: "banded", DAY_AHEAD: "day-ahead"}
UK = ZoneInfo("Europe/London")


class RejectReason(enum.IntEnum):
    """Why the contract rejected a reading; the values are the contract's enum."""

    NONE = 0
    BAD_SIGNATURE = 1
    METER_NOT_ACTIVE = 2
    STALE_SEQUENCE = 3
    STALE_TIMESTAMP = 4
    FUTURE_TIMESTAMP = 5
    REGISTER_DECREASED = 6
    IMPLAUSIBLE_DELTA = 7
    OUT_OF_RANGE = 8
    PERIOD_OVERFLOW = 9
    SEQUENCE_GAP = 10


#: Rejections for a reading's content: the contract records them and the reading's seq is used up (its energy is
#: billed with the next reading). The others (a bad signature, an inactive meter, a seq used already or one whose
#: predecessor is missing) change nothing.
USES_UP_SEQ = frozenset({RejectReason.STALE_TIMESTAMP, RejectReason.FUTURE_TIMESTAMP, RejectReason.REGISTER_DECREASED,
                         RejectReason.IMPLAUSIBLE_DELTA, RejectReason.PERIOD_OVERFLOW})


REJECT_ERRORS: dict[RejectReason, type[errors.SmartMeterError]] = {
    RejectReason.BAD_SIGNATURE: errors.BadSignature,
    RejectReason.METER_NOT_ACTIVE: errors.MeterInactive,
    RejectReason.STALE_SEQUENCE: errors.StaleSequence,
    RejectReason.STALE_TIMESTAMP: errors.StaleTimestamp,
    RejectReason.FUTURE_TIMESTAMP: errors.FutureTimestamp,
    RejectReason.REGISTER_DECREASED: errors.RegisterDecreased,
    RejectReason.IMPLAUSIBLE_DELTA: errors.ImplausibleDelta,
    RejectReason.OUT_OF_RANGE: errors.OutOfRange,
    RejectReason.PERIOD_OVERFLOW: errors.PeriodOverflow,
    RejectReason.SEQUENCE_GAP: errors.SequenceGap,
}


def period_of(t: int) -> int:
    """The settlement period (UTC half hour) that contains unix second ``t``."""
    return t // PERIOD_SECONDS


# ---------------------------------------------------------------- tariffs


@dataclass(frozen=True)
class PriceRule:
    """How one side (import or export) is priced: flat, banded or day-ahead (``rate`` the fallback)."""

    kind: int = FLAT
    rate: int = 0
    #: The band (0..7) of each local half hour, 48 of them from 00:00.
    bands: tuple[int, ...] = (0,) * PERIODS_PER_DAY
    #: Millipence per kWh of each band.
    band_rates: tuple[int, ...] = (0,) * BANDS

    def __post_init__(self) -> None:
        if self.kind not in KIND_NAMES:
            raise ValueError(f"price kind {self.kind} is not flat (0), banded (1) or day-ahead (2)")
        if len(self.bands) != PERIODS_PER_DAY or any(not 0 <= b < BANDS for b in self.bands):
            raise ValueError("a band table has 48 half hours, each in band 0..7")
        if len(self.band_rates) != BANDS or any(not 0 <= r <= MAX_PRICE for r in self.band_rates):
            raise ValueError("a band table has 8 band rates, each 0..2^32-2 millipence per kWh")
        if not 0 <= self.rate <= MAX_PRICE:
            raise ValueError("a rate is 0..2^32-2 millipence per kWh")

    @classmethod
    def flat(cls, rate: int) -> PriceRule:
        """One rate for every period."""
        return cls(FLAT, rate)

    @classmethod
    def banded(cls, bands: Sequence[int], band_rates: Sequence[int]) -> PriceRule:
        """A daily band table (48 local half hours) and the rates of its bands."""
        return cls(BANDED, 0, tuple(bands), tuple(band_rates) + (0,) * (BANDS - len(band_rates)))

    @classmethod
    def day_ahead(cls, fallback: int) -> PriceRule:
        """Published day-ahead prices, ``fallback`` for periods not published."""
        return cls(DAY_AHEAD, fallback)

    @property
    def packed_bands(self) -> int:
        """The band table as the contract stores it: 3 bits per half hour, half hour h at bits 3h."""
        return sum(b << (3 * h) for h, b in enumerate(self.bands))

    @property
    def packed_rates(self) -> int:
        """The band rates as the contract stores them: 32 bits per band, band b at bits 32b."""
        return sum(r << (32 * b) for b, r in enumerate(self.band_rates))

    @classmethod
    def from_packed(cls, kind: int, rate: int, bands: int, rates: int) -> PriceRule:
        """The rule from the contract's packed form."""
        return cls(
            int(kind),
            int(rate),
            tuple((int(bands) >> (3 * h)) & 7 for h in range(PERIODS_PER_DAY)),
            tuple((int(rates) >> (32 * b)) & 0xFFFFFFFF for b in range(BANDS)),
        )

    def describe(self) -> str:
        """A short human description, in pence."""
        if self.kind == FLAT:
            return f"flat {self.rate / 1000:g} p/kWh"
        if self.kind == DAY_AHEAD:
            return f"day-ahead (fallback {self.rate / 1000:g} p/kWh)"
        used = sorted(set(self.bands))
        return "banded " + ", ".join(f"band {b} {self.band_rates[b] / 1000:g} p/kWh" for b in used)


@dataclass(frozen=True)
class TariffVersion:
    """One tariff version: from ``effective_from`` on, until the next version starts."""

    effective_from: int
    standing_charge: int
    import_rule: PriceRule
    export_rule: PriceRule = field(default_factory=PriceRule)
    clock: int = CLOCK_GMT

    @classmethod
    def flat(cls, unit_rate: int, standing_charge: int, effective_from: int = 0, export_rate: int = 0) -> TariffVersion:
        """A flat import rate (and a flat export rate, 0 for none)."""
        return cls(effective_from, standing_charge, PriceRule.flat(unit_rate), PriceRule.flat(export_rate))

    def as_struct(self) -> tuple[int, ...]:
        """The contract's ``Tariff`` struct, in field order."""
        return (
            self.effective_from, self.standing_charge, self.clock,
            self.import_rule.kind, self.import_rule.rate,
            self.export_rule.kind, self.export_rule.rate,
            self.import_rule.packed_bands, self.import_rule.packed_rates,
            self.export_rule.packed_bands, self.export_rule.packed_rates,
        )

    @classmethod
    def from_struct(cls, raw: Sequence[Any]) -> TariffVersion:
        """The version from the contract's ``Tariff`` struct (a view's return value)."""
        (start, standing, clock, ikind, irate, ekind, erate, ibands, irates, ebands, erates) = raw
        return cls(int(start), int(standing), PriceRule.from_packed(ikind, irate, ibands, irates),
                   PriceRule.from_packed(ekind, erate, ebands, erates), int(clock))

    @classmethod
    def from_event(cls, args: dict[str, Any]) -> TariffVersion:
        """The version a ``TariffChanged`` event announced."""
        return cls(
            int(args["effectiveFrom"]), int(args["standingCharge"]),
            PriceRule.from_packed(args["importKind"], args["importRate"], args["importBands"], args["importBandRates"]),
            PriceRule.from_packed(args["exportKind"], args["exportRate"], args["exportBands"], args["exportBandRates"]),
            int(args["clock"]),
        )


@dataclass(frozen=True)
class ClockTable:
    """The UK clock changes as published on chain: (time, minutes ahead of UTC from then on)."""

    changes: tuple[tuple[int, int], ...] = ()

    def offset_minutes(self, t: int) -> int:
        """Minutes ahead of UTC at ``t``: the last change at or before it, 0 before the first."""
        i = bisect.bisect_right([at for at, _ in self.changes], t)
        return self.changes[i - 1][1] if i else 0

    def with_changes(self, more: Iterable[tuple[int, int]]) -> ClockTable:
        """The table with later changes appended."""
        return ClockTable(self.changes + tuple((int(a), int(m)) for a, m in more))

    def without(self, at: int) -> ClockTable:
        """The table with the change at ``at`` withdrawn (``ClockChangeWithdrawn``)."""
        return ClockTable(tuple(change for change in self.changes if change[0] != at))


def uk_clock_changes(first_year: int, last_year: int, zone: dt.tzinfo = UK) -> list[tuple[int, int]]:
    """Every change of ``zone``'s offset from UTC in the years given, from the IANA database, in
    time order as (unix second, minutes ahead of UTC from then on)."""
    def offset(t: int) -> int:
        delta = dt.datetime.fromtimestamp(t, zone).utcoffset()
        assert delta is not None
        return int(delta.total_seconds()) // 60

    changes: list[tuple[int, int]] = []
    t = int(dt.datetime(first_year, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    end = int(dt.datetime(last_year + 1, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    current = offset(t)
    step = 6 * 3600
    while t < end:
        nxt = t + step
        if offset(nxt) != current:
            lo, hi = t, nxt  # offset(lo) == current, offset(hi) differs: find the first second that differs
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == current else (lo, mid)
            current = offset(hi)
            changes.append((hi, current))
        t = nxt
    return changes


@dataclass
class Schedule:
    """Everything that prices a period: the tariff versions, the clock changes, day-ahead prices."""

    versions: list[TariffVersion]
    clock: ClockTable = field(default_factory=ClockTable)
    #: Published day-ahead prices by period, import and export.
    day_ahead_import: dict[int, int] = field(default_factory=dict)
    day_ahead_export: dict[int, int] = field(default_factory=dict)

    def add_version(self, version: TariffVersion) -> None:
        """Append a version (the contract's order)."""
        self.versions.append(version)

    def publish(self, first_period: int, import_prices: Sequence[int], export_prices: Sequence[int]) -> None:
        """Record day-ahead prices for consecutive periods from ``first_period``."""
        for i, price in enumerate(import_prices):
            self.day_ahead_import[first_period + i] = int(price)
        for i, price in enumerate(export_prices):
            self.day_ahead_export[first_period + i] = int(price)

    def version_index_at(self, t: int) -> int:
        """The 0-based index of the version in force at ``t``."""
        i = len(self.versions) - 1
        while self.versions[i].effective_from > t:
            i -= 1
        return i

    def version_at(self, t: int) -> TariffVersion:
        """The version in force at ``t``."""
        return self.versions[self.version_index_at(t)]

    def local_half_hour(self, p: int, clock: int) -> int:
        """The half hour of the day (0..47) that period ``p`` is, on the band table's clock."""
        if clock == CLOCK_GMT:
            return p % PERIODS_PER_DAY
        return (p + self.clock.offset_minutes(p * PERIOD_SECONDS) // 30) % PERIODS_PER_DAY

    def _price(self, rule: PriceRule, p: int, h: int, published: dict[int, int]) -> int:
        if rule.kind == FLAT:
            return rule.rate
        if rule.kind == BANDED:
            return rule.band_rates[rule.bands[h]]
        return published.get(p, rule.rate)

    def prices(self, p: int) -> tuple[int, int]:
        """Import and export prices of period ``p``, millipence per kWh."""
        v = self.version_at(p * PERIOD_SECONDS)
        h = self.local_half_hour(p, v.clock)
        return (self._price(v.import_rule, p, h, self.day_ahead_import),
                self._price(v.export_rule, p, h, self.day_ahead_export))

    def band_of(self, p: int) -> tuple[int | None, int | None]:
        """The import and export band of period ``p`` (None where that side is not banded)."""
        v = self.version_at(p * PERIOD_SECONDS)
        h = self.local_half_hour(p, v.clock)
        return (v.import_rule.bands[h] if v.import_rule.kind == BANDED else None,
                v.export_rule.bands[h] if v.export_rule.kind == BANDED else None)


def flat_schedule(unit_rate: int, standing_charge: int) -> Schedule:
    """A schedule of one flat version in force from time 0 (the contract's opening tariff)."""
    return Schedule([TariffVersion.flat(unit_rate, standing_charge)])


# ---------------------------------------------------------------- settlement periods

#: A period's figures are ``actual`` when every reading interval over it is at most this long: the
#: registers were read at least half-hourly around it, as half-hourly settlement reads them. A
#: longer interval (a gap) is spread in proportion to time, so the periods it spans are ``estimated``.
ACTUAL_MAX_INTERVAL = 1_800


@dataclass(frozen=True)
class SettlementPeriod:
    """A UTC half hour named as settlement names it: its local day and its number in that day (1-50)."""

    period: int
    settlement_date: dt.date
    number: int

    @property
    def start(self) -> int:
        """Its first second."""
        return self.period * PERIOD_SECONDS


def settlement_periods(start: int, end: int, tz: ZoneInfo) -> list[SettlementPeriod]:
    """The settlement periods that begin in [start, end), numbered from 1 within their local day
    (a day of 23 hours has 46, one of 25 hours 50)."""
    out: list[SettlementPeriod] = []
    p = -(-start // PERIOD_SECONDS)
    day: dt.date | None = None
    day_first = 0
    while p * PERIOD_SECONDS < end:
        local = dt.datetime.fromtimestamp(p * PERIOD_SECONDS, tz).date()
        if local != day:
            day = local
            day_first = int(dt.datetime.combine(local, dt.time(), tzinfo=tz).timestamp()) // PERIOD_SECONDS
        out.append(SettlementPeriod(p, local, p - day_first + 1))
        p += 1
    return out


def is_actual(longest_interval: int, period: int, last_reading: int) -> bool:
    """Whether a period's figures come from readings around it rather than from interpolation."""
    return longest_interval <= ACTUAL_MAX_INTERVAL and (period + 1) * PERIOD_SECONDS <= last_reading


# ---------------------------------------------------------------- splitting and pricing


def split(t0: int, t1: int, delta: int) -> list[tuple[int, int]]:
    """Split ``delta`` Wh used over the seconds [t0, t1) over settlement periods in proportion to
    time: (period, Wh) for every period touched, adding up to ``delta`` exactly.

    The Wh up to each boundary B is floor(delta x (B - t0) / (t1 - t0)); a period gets the
    difference between its two boundaries, so rounding never loses or invents a Wh.
    """
    if t1 <= t0:
        raise ValueError(f"a reading's interval must be positive, got [{t0}, {t1})")
    first, last = t0 // PERIOD_SECONDS, (t1 - 1) // PERIOD_SECONDS
    parts, done, span = [], 0, t1 - t0
    for p in range(first, last):
        cum = delta * ((p + 1) * PERIOD_SECONDS - t0) // span
        parts.append((p, cum - done))
        done = cum
    parts.append((last, delta - done))
    return parts


def split_pair(t0: int, t1: int, d_import: int, d_export: int) -> list[tuple[int, int, int]]:
    """Split both registers' deltas: (period, import Wh, export Wh) per period touched."""
    imports, exports = split(t0, t1, d_import), split(t0, t1, d_export)
    return [(p, i, e) for (p, i), (_, e) in zip(imports, exports, strict=True)]


def cost_of(schedule: Schedule, t0: int, t1: int, d_import: int, d_export: int) -> tuple[int, int]:
    """Import cost and export credit, in micropence, of the energy between two readings."""
    cost = credit = 0
    for p, i, e in split_pair(t0, t1, d_import, d_export):
        if i or e:
            price_in, price_out = schedule.prices(p)
            cost += i * price_in
            credit += e * price_out
    return cost, credit


def standing_charge(versions: Sequence[TariffVersion], start: int, end: int) -> int:
    """The standing charge for the seconds [start, end), in micropence: each version's daily charge
    for the seconds it was in force, summed, rounded down once."""
    if end <= start:
        return 0
    total = 0
    for i, v in enumerate(versions):
        until = versions[i + 1].effective_from if i + 1 < len(versions) else end
        lo, hi = max(start, v.effective_from), min(end, until)
        if hi > lo:
            total += (hi - lo) * v.standing_charge
    return total * MICRO_PER_MILLI // SECONDS_PER_DAY


# ---------------------------------------------------------------- readings and ledgers


@dataclass(frozen=True)
class MeterLedger:
    """What the contract keeps per meter for checking and billing readings (its state word)."""

    active: bool
    last_seq: int
    last_timestamp: int
    last_energy_wh: int
    last_export_wh: int = 0
    period_import_cost: int = 0
    period_export_credit: int = 0


@dataclass(frozen=True)
class OpenBill:
    """A billing period as the contract's ``openBill`` and ``BillIssued`` give it (micropence)."""

    period_id: int
    period_start: int
    period_end: int
    import_wh: int
    export_wh: int
    import_cost: int
    export_credit: int
    standing_charge: int

    @property
    def amount_due(self) -> int:
        """Import cost plus standing charge minus export credit; negative when in credit."""
        return self.import_cost + self.standing_charge - self.export_credit


def check_reading(
    ledger: MeterLedger,
    seq: int,
    timestamp: int,
    energy_wh: int,
    export_wh: int = 0,
    *,
    now: int,
    max_power_w: int,
    max_future_skew: int,
) -> RejectReason:
    """Apply the contract's checks (all but the signature) in the contract's order.

    ``OUT_OF_RANGE`` is what the packed batch cannot encode (seq and timestamp above 32 bits,
    registers above 48); the gateway refuses it before it reaches the contract.
    """
    if not ledger.active:
        return RejectReason.METER_NOT_ACTIVE
    if seq > MAX_SEQ or timestamp > MAX_TIMESTAMP or energy_wh > MAX_REGISTER_WH or export_wh > MAX_REGISTER_WH:
        return RejectReason.OUT_OF_RANGE
    if seq <= ledger.last_seq:
        return RejectReason.STALE_SEQUENCE
    if seq != ledger.last_seq + 1:
        return RejectReason.SEQUENCE_GAP
    if timestamp <= ledger.last_timestamp:
        return RejectReason.STALE_TIMESTAMP
    if timestamp > now + max_future_skew:
        return RejectReason.FUTURE_TIMESTAMP
    if energy_wh < ledger.last_energy_wh or export_wh < ledger.last_export_wh:
        return RejectReason.REGISTER_DECREASED
    limit = max_power_w * (timestamp - ledger.last_timestamp)
    if (energy_wh - ledger.last_energy_wh) * 3600 > limit or (export_wh - ledger.last_export_wh) * 3600 > limit:
        return RejectReason.IMPLAUSIBLE_DELTA
    return RejectReason.NONE


def accrue(
    ledger: MeterLedger, seq: int, timestamp: int, energy_wh: int, export_wh: int, schedule: Schedule
) -> MeterLedger:
    """Return the ledger after recording an already-checked reading priced by ``schedule``."""
    cost, credit = cost_of(schedule, ledger.last_timestamp, timestamp,
                           energy_wh - ledger.last_energy_wh, export_wh - ledger.last_export_wh)
    return replace(
        ledger,
        last_seq=seq,
        last_timestamp=timestamp,
        last_energy_wh=energy_wh,
        last_export_wh=export_wh,
        period_import_cost=ledger.period_import_cost + cost,
        period_export_credit=ledger.period_export_credit + credit,
    )


def final_read(ledger: MeterLedger, timestamp: int, energy_wh: int, export_wh: int, schedule: Schedule
               ) -> MeterLedger:
    """The ledger after an exchange's or register reset's final read (the seq stays; at the last reading's
    time the registers must not have moved, and nothing is priced)."""
    if timestamp == ledger.last_timestamp:
        return ledger
    return accrue(ledger, ledger.last_seq, timestamp, energy_wh, export_wh, schedule)


def restart(ledger: MeterLedger, energy_wh: int, export_wh: int) -> MeterLedger:
    """The ledger of a register restarted (exchange or reset) after its final read: seq 0, the new registers;
    the time and the open period's figures go on."""
    return replace(ledger, last_seq=0, last_energy_wh=energy_wh, last_export_wh=export_wh)


def overflows(ledger: MeterLedger) -> bool:
    """Whether an accrued ledger no longer fits the contract's packed fields."""
    return ledger.period_import_cost > MAX_PERIOD_IMPORT_COST or ledger.period_export_credit > MAX_PERIOD_EXPORT_CREDIT


def format_pounds(micropence: int) -> str:
    """Format an amount in micropence as pounds and pence (half a penny rounds up; credit with a minus)."""
    sign = "-" if micropence < 0 else ""
    pence = (abs(micropence) + 500_000) // 1_000_000
    return f"{sign}£{pence // 100:,}.{pence % 100:02d}"


def format_pence(millipence: int) -> str:
    """A rate in millipence as pence, with a third decimal only when it carries one: ``24.67p``, ``24.675p``."""
    text = f"{millipence // 1000:,}.{millipence % 1000:03d}"
    return (text[:-1] if text.endswith("0") else text) + "p"


def format_kwh(wh: int) -> str:
    """Energy in Wh as kWh with three decimals: ``1,234.567 kWh``."""
    sign = "-" if wh < 0 else ""
    wh = abs(wh)
    return f"{sign}{wh // 1000:,}.{wh % 1000:03d} kWh"


def band_names(rule: PriceRule) -> dict[int, str]:
    """Default names of a banded rule's bands, cheapest first: off-peak, day, peak, ..."""
    used = sorted(set(rule.bands), key=lambda b: rule.band_rates[b])
    words = ["off-peak", "day", "peak"] if len(used) == 3 else ["off-peak", "peak"] if len(used) == 2 else []
    return {b: (words[i] if i < len(words) else f"band {b}") for i, b in enumerate(used)}


def describe_rule(rule: PriceRule) -> str:
    """One side's pricing in words: ``flat 24.67p/kWh``, ``day-ahead, else 24.67p/kWh``, or each band with its
    rate and hours (``off-peak 8.50p 00:30-05:30; day 24.67p; peak 35.00p 16:00-19:00``); ``none`` for nothing."""
    if rule.kind == FLAT:
        return f"flat {format_pence(rule.rate)}/kWh" if rule.rate else "none"
    if rule.kind == DAY_AHEAD:
        return f"day-ahead, else {format_pence(rule.rate)}/kWh"
    names = band_names(rule)
    parts = []
    for band in sorted(names, key=lambda b: rule.band_rates[b]):
        hours = [h for h in range(PERIODS_PER_DAY) if rule.bands[h] == band]
        spans, start = [], hours[0]
        for a, b in zip(hours, [*hours[1:], None], strict=True):
            if b != a + 1:
                spans.append(f"{start // 2:02d}:{start % 2 * 30:02d}-{(a + 1) // 2:02d}:{(a + 1) % 2 * 30:02d}")
                if b is not None:
                    start = b
        parts.append(f"{names[band]} {format_pence(rule.band_rates[band])} {'+'.join(spans) if len(spans) < 3 else ''}"
                     .rstrip())
    return "; ".join(parts)
