"""The REST API's request and response shapes (they make its OpenAPI description), and the
functions that build them from the index.

Conventions: field names are snake_case; times are ISO 8601 in UTC (``2026-11-24T05:00:00Z``);
energy is in Wh (and kWh where named so); money is in micropence (1/1,000,000 of a penny,
the contract's unit) with a rounded ``..._pounds`` text beside the total.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from common.customers import Customer
from common.tariff import format_pounds
from server.health import HealthParts
from server.indexing.index import MeterRecord, Period

__all__ = [
    "iso",
    "ERROR_CODES",
    "ErrorBody",
    "ErrorOut",
    "Page",
    "BillOut",
    "LastReading",
    "CustomerOut",
    "MeterOut",
    "ConsumptionOut",
    "ReadingOut",
    "RestartOut",
    "TariffOut",
    "PricingOut",
    "SettlementPeriodOut",
    "BandCostOut",
    "GridAlertOut",
    "ConsumptionAlertOut",
    "ThresholdIn",
    "ThresholdOut",
    "ChallengeOut",
    "TokenIn",
    "TokenOut",
    "MeOut",
    "HealthOut",
    "DrHalfHourOut",
    "MeterDemandResponseOut",
    "bill_out",
    "meter_out",
    "restart_out",
    "tariff_out",
    "grid_alert_out",
    "consumption_alert_out",
]

T = TypeVar("T")
SEVERITIES = ("info", "warning", "critical")


def iso(ts: int | None) -> str | None:
    """A unix time as ISO 8601 in UTC."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


#: Every code an API error carries, with its HTTP status.
ERROR_CODES = {
    "unauthorized": 401, "unknown_meter": 401, "challenge_mismatch": 401, "challenge_expired": 401,
    "bad_login_signature": 401, "forbidden": 403, "not_found": 404, "method_not_allowed": 405,
    "conversation_full": 409, "opt_out_refused": 409, "invalid_request": 422, "rate_limited": 429,
    "too_many_messages": 429,
    "internal_error": 500, "statement_mismatch": 500,
}


class ErrorBody(BaseModel):
    """What went wrong: a stable machine ``code`` and a sentence saying what to do."""

    code: str = Field(description="stable: " + ", ".join(f"`{c}` ({s})" for c, s in ERROR_CODES.items()))
    message: str = Field(description="what happened and what to do, for people (may change)")


class ErrorOut(BaseModel):
    """Every error response."""

    error: ErrorBody


class Page(BaseModel, Generic[T]):
    """One page of a list: ``count`` in all, links to the next and previous pages."""

    count: int
    next: str | None
    previous: str | None
    results: list[T]


class BillOut(BaseModel):
    """A billing period: open (the live bill) or issued when the operator closed it. The amount due
    is the import charge plus the standing charge minus the export credit; negative when in credit."""

    meter: str
    period_id: int
    status: Literal["open", "issued", "transferred"] = Field(
        description="transferred: the period went on with the meter that took over in an exchange")
    period_start: str
    period_end: str
    energy_wh: int = Field(description="energy imported in the period")
    export_wh: int = Field(description="energy exported in the period")
    energy_charge_micropence: int = Field(description="what the imported energy cost")
    export_credit_micropence: int = Field(description="what the exported energy earned")
    standing_charge_micropence: int
    amount_due_micropence: int = Field(description="negative when the customer is in credit")
    amount_due_pounds: str = Field(description="amount due rounded to the penny, e.g. '£12.34' or '-£1.20'")
    in_credit: bool = Field(description="the export credit exceeds the charges")
    issued_at: str | None = None
    tx_hash: str | None = None
    final: bool = Field(True, description="false while the newest reading in it is in a block not final yet "
                                          "(CONFIRMATIONS deep): a provisional bill, which a reorganisation may undo")
    demand_response_credit_micropence: int | None = Field(
        default=None, description="demand-response credits recorded on chain against this period (DemandResponse "
                          "`creditOf`); null in live updates, which do not read the chain")
    amount_payable_micropence: int | None = Field(
        default=None, description="what the customer pays: the amount due minus the demand-response credits (null "
                          "with them)")
    amount_payable_pounds: str | None = Field(default=None, description="the amount payable rounded to the penny")

    def with_credit(self, credit: int) -> BillOut:
        """This bill with its demand-response credits and the amount payable after them."""
        payable = self.amount_due_micropence - credit
        return self.model_copy(update={"demand_response_credit_micropence": credit,
                                       "amount_payable_micropence": payable,
                                       "amount_payable_pounds": format_pounds(payable)})


class LastReading(BaseModel):
    """The newest reading recorded on chain."""

    seq: int
    read_at: str
    register_wh: int
    block: int | None
    tx_hash: str | None


class CustomerOut(BaseModel):
    """The account holder (off chain; shown to the operator and to the customer only)."""

    name: str
    postal_address: str
    email: str


class MeterOut(BaseModel):
    """A meter: account reference, status, last reading and open bill."""

    address: str
    name: str | None
    account_ref: str
    region: str
    status: Literal["active", "inactive", "retired"] = Field(
        description="retired: exchanged for `replaced_by`, which took over its account and open bill")
    connected: bool
    opened_at: str
    registered_at: str
    status_changed_at: str
    last_reading: LastReading | None
    open_bill: BillOut
    hourly_limit_wh: int
    rejected_readings: int
    customer: CustomerOut | None
    replaced_by: str | None = Field(None, description="the meter that took over this one's account in an exchange")


class ConsumptionOut(BaseModel):
    """Consumption in an hour, day, week or month (``group_by``)."""

    interval_start: str
    interval_end: str
    energy_wh: int
    consumption_kwh: float


class ReadingOut(ConsumptionOut):
    """One recorded reading: the consumption since the previous one, and where it is on chain."""

    energy_in_window_wh: int = Field(description="the share of `energy_wh` in the hours of the asked window (a "
                                                 "reading's energy is spread over the hours its interval covers, as "
                                                 "hourly totals are)")
    seq: int
    register_wh: int
    block: int
    tx_hash: str
    source: Literal["meter", "exchange", "reset"] = Field(
        "meter", description="a signed reading, or the operator's final read closing the register in a meter "
                             "exchange or register reset (its seq is the last reading's)")


class RestartOut(BaseModel):
    """A meter exchange or register reset: the final read that closed the register, and the registers after it."""

    kind: Literal["exchange", "reset"]
    meter: str = Field(description="the meter whose register was closed")
    new_meter: str | None = Field(description="exchange: the meter that took over the account and open bill")
    at: str = Field(description="the final read's time; the new register's readings must come after it")
    last_seq: int = Field(description="the last seq of the old sequence; the new one starts at 1")
    final_import_register_wh: int
    final_export_register_wh: int
    final_import_wh: int = Field(description="energy imported between the last reading and the final read")
    final_export_wh: int
    opening_import_register_wh: int = Field(description="the register from then on (the new meter's, after an "
                                                        "exchange)")
    opening_export_register_wh: int
    period_id: int = Field(description="the billing period that goes on across it")
    block: int
    tx_hash: str


class PricingOut(BaseModel):
    """How one side (import or export) of a tariff version is priced, in millipence per kWh."""

    kind: Literal["flat", "banded", "day_ahead"]
    rate: int = Field(description="the flat rate, or the day-ahead fallback (0 when banded)")
    bands: list[int] | None = Field(None, description="banded: the band of each local half hour from 00:00 (48)")
    band_rates: list[int] | None = Field(None, description="banded: the rate of each band (8)")


class TariffOut(BaseModel):
    """A tariff version the operator set; it prices the energy used from ``effective_from`` on."""

    version: int
    unit_rate_millipence_per_kwh: int = Field(description="the import rate when flat (or the day-ahead fallback)")
    standing_charge_millipence_per_day: int
    effective_from: str
    clock: Literal["gmt", "local"] = Field(description="band tables in GMT all year, or in UK clock time")
    import_pricing: PricingOut
    export_pricing: PricingOut
    block: int
    tx_hash: str


class SettlementPeriodOut(BaseModel):
    """One half-hourly settlement period of a meter: its energy, price and cost."""

    interval_start: str
    interval_end: str
    settlement_date: str = Field(description="the local day it belongs to")
    settlement_period: int = Field(description="1-48 within the local day (1-46 and 1-50 on clock-change days)")
    import_wh: int
    export_wh: int
    import_band: int | None = Field(description="the import band (banded tariffs), else null")
    import_price_millipence_per_kwh: int
    export_price_millipence_per_kwh: int
    import_cost_micropence: int
    export_credit_micropence: int
    estimated: bool = Field(description="a gap in the readings spans it: its energy is interpolated from the "
                                        "registers on either side; it becomes actual if later readings allow")
    status: Literal["actual", "estimated"]


class BandCostOut(BaseModel):
    """What the energy priced at one import price or band cost, over a window."""

    band: int | None = Field(description="the band number for banded tariffs, else null")
    import_price_millipence_per_kwh: int
    periods: int
    import_wh: int
    import_cost_micropence: int
    export_wh: int
    export_credit_micropence: int


class GridAlertOut(BaseModel):
    """A grid alert broadcast through the chain."""

    id: int
    severity: Literal["info", "warning", "critical"]
    kind: str
    region: str = Field(description="empty for every region")
    message: str
    raised_at: str
    expires_at: str
    cleared_at: str | None
    active: bool
    tx_hash: str


class ParticipationOut(BaseModel):
    """A targeted meter's part in a demand-response event: its opt state and, once credited, its figures."""

    meter: str
    state: Literal["participating", "opted_out", "credited"]
    baseline_wh: int | None = Field(description="the baseline the credit was computed from (credited only)")
    actual_wh: int | None
    credit: int | None = Field(description="micropence put against the billing period `period_id`")
    period_id: int | None


class DrHalfHourOut(BaseModel):
    """One half hour (a settlement period) of an event's window for one meter."""

    start: str
    end: str
    baseline_wh: int | None = Field(description="the baseline's share of this half hour (the shares add up to "
                                                "`baseline_wh`), null without a baseline")
    actual_wh: int | None = Field(description="energy imported, null until the readings cover the half hour")


class MeterDemandResponseOut(BaseModel):
    """A demand-response event as one targeted meter went through it: its window, and the meter's baseline
    against its actual consumption."""

    event_id: int
    programme: str
    status: Literal["far", "near", "active", "completed"]
    start: str
    end: str
    signal_kind: Literal["level", "price"]
    signal_value: int = Field(description="a level 0-3, or millipence per kWh")
    credit_rate: int = Field(description="millipence per kWh of reduction")
    opted_out: bool
    baseline_kind: Literal["credited", "provisional"] | None = Field(
        description="`credited`: the baseline the settlement credited; `provisional`: computed now from the chain "
                    "by the same method (event active, or completed and not credited yet); null: an event to "
                    "come, an opt-out, or too few baseline days")
    baseline_wh: int | None
    actual_wh: int | None = Field(description="energy imported in the window (credited: as credited); null until "
                                              "the readings cover it")
    credit_micropence: int | None = Field(description="the credit recorded on chain, null until credited")
    credit_pounds: str | None = None
    period_id: int | None = Field(description="the billing period the credit went on")
    half_hours: list[DrHalfHourOut]


class DemandResponseEventOut(BaseModel):
    """A demand-response event on chain (OpenADR 2.0b's model) and each targeted meter's participation."""

    id: int
    modification: int
    programme: str
    status: Literal["far", "near", "active", "completed", "cancelled"]
    notice_at: str
    start: str
    end: str
    signal_kind: Literal["level", "price"]
    signal_value: int = Field(description="a level 0-3, or millipence per kWh")
    credit_rate: int = Field(description="millipence per kWh of reduction")
    regions: list[str]
    meters: list[ParticipationOut]


class ConsumptionAlertOut(BaseModel):
    """Consumption ran high: an hour over the meter's limit, or an abrupt jump in power."""

    id: int | None = None
    meter: str
    kind: Literal["hourly_limit", "sudden_jump"]
    at: str
    energy_wh: int
    limit_wh: int
    power_w: int
    message: str


class ThresholdIn(BaseModel):
    """A meter's hourly consumption limit: Wh, 0 for no alerts, null to use the default."""

    hourly_limit_wh: int | None = Field(ge=0, le=1_000_000)


class ThresholdOut(BaseModel):
    """A meter's consumption-alert settings."""

    meter: str
    hourly_limit_wh: int = Field(description="0 means no hourly alerts")
    source: Literal["meter", "default"]
    jump_factor: float
    jump_min_w: int


class ChallengeOut(BaseModel):
    """Sign ``typed_data`` (EIP-712) with the meter's key, then send it to ``/api/v1/auth/token``."""

    nonce: str
    expires_at: str
    typed_data: dict[str, Any]


class TokenIn(BaseModel):
    """A signed sign-in challenge."""

    meter: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    nonce: str = Field(pattern=r"^0x[0-9a-fA-F]{64}$")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class OptOutIn(BaseModel):
    """A meter's EIP-712 ``OptOut(meter, eventId, modification, terms)`` (or ``OptOutWithdrawal``) signature of
    the event's current modification and terms, made with its own key."""

    meter: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    modification: int = Field(ge=0, le=2**32 - 1, description="the event's modification number the meter signed")
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class OptOutOut(BaseModel):
    """A relayed opt-out (or withdrawal of one), recorded on chain."""

    event_id: int
    meter: str
    modification: int
    tx_hash: str


class TokenOut(BaseModel):
    """A bearer token for ``Authorization: Bearer <token>``."""

    token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: str
    meter: str


class MeOut(BaseModel):
    """Who the credentials belong to."""

    role: Literal["operator", "customer"]
    meter: str | None


class HealthOut(BaseModel):
    """Whether the server is up, each part with its state and the reason, and how far the index has read the chain."""

    status: Literal["ok", "degraded", "down"] = Field(
        description="ok (HTTP 200) when every part is up; otherwise HTTP 503 with down when readings cannot reach the "
                    "chain (the chain or the batcher is down) and degraded when another part is not up")
    reason: str = Field(description="the parts that are not up and why, or 'every part is up'")
    parts: HealthParts = Field(description="chain, batcher, relay, indexer and gateway (its processes and the meters "
                                           "connected), each with a state (up, degraded, down), a reason and what it "
                                           "is judged on")
    chain_id: int
    contract: str
    index_block: int | None
    meters: int
    connected_meters: int
    timezone: str = Field(description="the time zone dates without a time are read in, and days are counted in")


def bill_out(p: Period, final: bool = True) -> BillOut:
    """A billing period for the API (``final`` false: provisional)."""
    return BillOut(final=final, 
        meter=p.meter, period_id=p.period_id, status=p.status,  # type: ignore[arg-type]
        period_start=iso(p.period_start) or "", period_end=iso(p.period_end) or "", energy_wh=p.energy_wh,
        export_wh=p.export_wh, energy_charge_micropence=p.energy_cost, export_credit_micropence=p.export_credit,
        standing_charge_micropence=p.standing_charge, amount_due_micropence=p.amount_due,
        amount_due_pounds=format_pounds(p.amount_due), in_credit=p.amount_due < 0,
        issued_at=iso(p.issued_at), tx_hash=p.issued_tx,
    )


def meter_out(m: MeterRecord, connected: bool, limit_wh: int, customer: Customer | None,
              final: bool = True) -> MeterOut:
    """A meter for the API (``final`` false: its open bill is provisional)."""
    last = None
    if m.last_seq > 0:
        last = LastReading(seq=m.last_seq, read_at=iso(m.last_timestamp) or "", register_wh=m.last_energy_wh,
                           block=m.last_block, tx_hash=m.last_tx)
    return MeterOut(
        address=m.address, name=customer.meter_name if customer else None, account_ref=m.account_ref,
        region=m.region, status="retired" if m.replaced_by else "active" if m.active else "inactive",
        connected=connected, replaced_by=m.replaced_by,
        opened_at=iso(m.opened_at) or "", registered_at=iso(m.registered_at) or "",
        status_changed_at=iso(m.status_changed_at) or "", last_reading=last, open_bill=bill_out(m.period, final),
        hourly_limit_wh=limit_wh, rejected_readings=m.rejected,
        customer=CustomerOut(name=customer.name, postal_address=customer.address, email=customer.email)
        if customer else None,
    )


def restart_out(r: dict[str, Any]) -> RestartOut:
    """A row of the index's ``restarts`` for the API."""
    return RestartOut(kind=r["kind"], meter=r["meter"], new_meter=r["new_meter"], at=iso(r["at"]) or "",
                      last_seq=r["last_seq"], final_import_register_wh=r["final_import_wh"],
                      final_export_register_wh=r["final_export_wh"], final_import_wh=r["import_wh"],
                      final_export_wh=r["export_wh"], opening_import_register_wh=r["opening_import_wh"],
                      opening_export_register_wh=r["opening_export_wh"], period_id=r["period_id"], block=r["block"],
                      tx_hash=r["tx_hash"])


def tariff_out(t: dict[str, Any]) -> TariffOut:
    """A tariff row for the API."""
    return TariffOut(version=t["version"], unit_rate_millipence_per_kwh=t["unit_rate"],
                     standing_charge_millipence_per_day=t["standing_charge"],
                     effective_from=iso(t["effective_from"]) or "", clock=t["clock"],
                     import_pricing=PricingOut(**t["import"]), export_pricing=PricingOut(**t["export"]),
                     block=t["block"], tx_hash=t["tx_hash"])


def grid_alert_out(a: dict[str, Any], now: int) -> GridAlertOut:
    """A grid alert row for the API."""
    return GridAlertOut(
        id=a["id"], severity=SEVERITIES[min(a["severity"], 2)], kind=a["kind"], region=a["region"],  # type: ignore[arg-type]
        message=a["message"], raised_at=iso(a["raised_at"]) or "", expires_at=iso(a["expires_at"]) or "",
        cleared_at=iso(a["cleared_at"]), active=a["cleared_at"] is None and a["expires_at"] > now,
        tx_hash=a["raised_tx"],
    )


def consumption_alert_out(row: dict[str, Any]) -> ConsumptionAlertOut:
    """A consumption alert (a stored row, or one just raised) for the API."""
    return ConsumptionAlertOut(id=row.get("id"), meter=row["meter"], kind=row["kind"], at=iso(row["at"]) or "",
                               energy_wh=row["energy_wh"], limit_wh=row["limit_wh"], power_w=row["power_w"],
                               message=row["message"])
