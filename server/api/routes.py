"""The REST API's routes (``/api/v1``) and the dashboard's live WebSocket.

Every route but ``/health`` and the sign-in pair needs credentials: ``X-API-Key`` (the
operator's key, or a customer account's) or ``Authorization: Bearer <token>``. The operator
sees every meter; a customer sees their own meter, its bills and alerts, the tariffs and the
grid alerts for their region, and may set their own hourly limit. Lists are paged like UK
suppliers' consumption APIs: ``page`` and ``page_size``, ``count``, ``next`` and ``previous``.

Every route declares the errors it answers (``ErrorOut`` with its codes), and every number a
query takes is bounded, so that what the description says is what the server does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from eth_utils import to_checksum_address
from fastapi import APIRouter, Depends, Path, Query, Request, Response, Security, WebSocket
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.websockets import WebSocketDisconnect

from common import errors
from common.chain import ChainClient
from common.customers import Customers
from common.demand_response import DemandResponse, MeterWindow, meter_windows, period_credits
from common.deployment import Deployment
from common.eip712 import login_typed_data, recover_optout_signer
from common.logs import log_event
from common.settings import Settings
from common.tariff import format_pounds
from server.api.auth import Authenticator, Principal
from server.api.conversations import Conversations
from server.api.live import LiveFeed, Update
from server.api.schemas import (
    BandCostOut,
    BillOut,
    ChallengeOut,
    ConsumptionAlertOut,
    ConsumptionOut,
    DemandResponseEventOut,
    DrHalfHourOut,
    ErrorOut,
    GridAlertOut,
    HealthOut,
    MeOut,
    MeterDemandResponseOut,
    MeterOut,
    OptOutIn,
    OptOutOut,
    Page,
    ParticipationOut,
    ReadingOut,
    RestartOut,
    SettlementPeriodOut,
    TariffOut,
    ThresholdIn,
    ThresholdOut,
    TokenIn,
    TokenOut,
    bill_out,
    consumption_alert_out,
    grid_alert_out,
    iso,
    meter_out,
    restart_out,
    tariff_out,
)
from server.api.throttle import client_key
from server.bus.hub import Hub
from server.health import HealthCheck
from server.indexing.history import PERIOD, GroupBy, group_hours, is_actual, settlement_periods, window_hours
from server.indexing.index import Index, MeterRecord
from server.relay.dr_relay import OptOutRelayer

__all__ = ["ApiContext", "router", "parse_time", "MAX_TIME", "MAX_PAGE", "MAX_PAGE_SIZE", "MAX_AMOUNT"]

log = logging.getLogger("api")
router = APIRouter(prefix="/api/v1")
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
UNIX_SECONDS = re.compile(r"[0-9]+")
FAR_FUTURE = 2**32
#: The last second ISO 8601 writes without extensions (9999-12-31T23:59:59Z): query times stop there.
MAX_TIME = 253_402_300_799
MAX_PAGE_SIZE = 10_000
#: Pages beyond this are refused, so (page - 1) * page_size always fits SQLite's 64-bit OFFSET.
MAX_PAGE = 1_000_000_000
#: The largest amount SQLite's 64-bit integers compare (no bill comes near it).
MAX_AMOUNT = 2**63 - 1
#: The longest ISO 8601 time a query may give (with fractions of a second and an offset).
MAX_TIME_TEXT = 40
#: WebSocket close code for a refused live connection (policy violation).
POLICY_VIOLATION = 1008
#: What the live feed's first message must be.
LIVE_AUTH = '{"type": "auth", "key": "<API key>"} or {"type": "auth", "token": "<bearer token>"}'
#: Query parameters that once carried the live feed's credentials: refused now (``credentials_in_url``).
URL_CREDENTIALS = ("key", "token")


@dataclass
class ApiContext:
    """What the routes work with, shared with the rest of the server."""

    settings: Settings
    deployment: Deployment
    index: Index
    auth: Authenticator
    customers: Customers
    feed: LiveFeed
    hub: Hub | None = None
    conversations: Conversations | None = None
    #: Sends opt-outs with RELAYER_KEY, one at a time, shared with the gateway (None: one of the API's own).
    opt_outs: OptOutRelayer | None = None

    def connected(self, meter: str) -> bool:
        """Whether the meter is logged in to the gateway now."""
        return self.hub is not None and meter.lower() in self.hub.peers

    def meter_out(self, m: MeterRecord) -> MeterOut:
        """A meter as the API shows it."""
        return meter_out(m, self.connected(m.address), self.index.limit_for(m.address),
                         self.customers.by_meter(m.address), self.index.is_final(m.last_block))


def _ctx(request: Request) -> ApiContext:
    return request.app.state.ctx  # type: ignore[no-any-return]


Ctx = Annotated[ApiContext, Depends(_ctx)]

# The two ways to give credentials, declared as OpenAPI security schemes; auto_error=False
# leaves refusing to ``principal``, which answers with the API's own error shape.
API_KEY = APIKeyHeader(name="X-API-Key", scheme_name="ApiKey", auto_error=False,
                       description="the operator's API key, or a customer account's")
BEARER = HTTPBearer(scheme_name="Bearer", auto_error=False,
                    description="a token from POST /api/v1/auth/token (signing in with the meter's key)")


def principal(
    ctx: Ctx, request: Request,
    api_key: Annotated[str | None, Security(API_KEY)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> Principal:
    """The caller, from ``X-API-Key`` or ``Authorization: Bearer``."""
    if bearer is None and request.headers.get("authorization"):
        raise errors.Unauthorized("the Authorization header must be 'Bearer <token>'")
    return ctx.auth.authenticate(api_key, bearer.credentials.strip() if bearer else None)


def _client(request: Request) -> str:
    """Who a request without credentials comes from: its peer's address (IPv6 by /64)."""
    return client_key(request.client.host if request.client else None)


def signing_in(ctx: Ctx, request: Request) -> None:
    """Count a sign-in request against its client's rate (the sign-in routes need no credentials)."""
    ctx.auth.throttle(_client(request), time.monotonic())


Caller = Annotated[Principal, Depends(principal)]
MeterAddress = Annotated[str, Path(pattern=ADDRESS.pattern, description="the meter's address: 0x and 40 hex digits")]
PageNo = Annotated[int, Query(ge=1, le=MAX_PAGE, description="page number, from 1")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="results per page")]
OrderBy = Annotated[Literal["period", "-period"], Query(description="'period' oldest first, '-period' newest first")]
TIME_TEXT = ("ISO 8601 date or time (local time zone when none is given), or unix seconds (ASCII digits); from "
             "1970-01-01 to 9999-12-31")
TimeParam = Annotated[str | None, Query(max_length=MAX_TIME_TEXT, description="the start (included): " + TIME_TEXT)]
TimeParamTo = Annotated[str | None, Query(max_length=MAX_TIME_TEXT, description=(
    "the end (not included), after period_from: " + TIME_TEXT))]
MinAmount = Annotated[int | None, Query(ge=0, le=MAX_AMOUNT, description="only bills of at least this amount due "
                                                                       "(without it, bills in credit too)")]


def parse_time(value: str | None, name: str, tz: dt.tzinfo, default: int) -> int:
    """A query time as unix seconds: unix seconds, an ISO 8601 time, or a date (local midnight).

    Only ASCII digits make unix seconds (``str.isdigit`` also takes '²' and other scripts'
    digits), and the time must lie between 1970 and the end of 9999: InvalidRequest otherwise.
    """
    if value is None or value == "":
        return default
    if UNIX_SECONDS.fullmatch(value):
        seconds = int(value)
    else:
        try:
            if not value.isascii():
                raise ValueError("not ASCII")
            parsed = dt.datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=tz)
            seconds = int(parsed.timestamp())
        except (ValueError, OverflowError) as err:
            raise errors.InvalidRequest(
                f"{name}: {value!r} is not an ISO 8601 date or time, nor unix seconds") from err
    if not 0 <= seconds <= MAX_TIME:
        raise errors.InvalidRequest(f"{name}: {value!r} is outside 1970-01-01 to 9999-12-31")
    return seconds


# The errors routes answer, each with the codes it carries, for the OpenAPI description.
UNAUTHORIZED = (401, "`unauthorized`: no credentials, or an API key or bearer token this server does not know "
                     "(or an expired token)")
FORBIDDEN = (403, "`forbidden`: a customer's credentials asking about another meter")
NOT_FOUND = (404, "`not_found`: no meter is registered at this address")
INVALID = (422, "`invalid_request`: a parameter or the body is missing, malformed or out of range; the message "
                "names it")
RATE_LIMITED = (429, "`rate_limited`: too many sign-in requests from this client address; wait `Retry-After` "
                     "seconds")
UNKNOWN_METER = (401, "`unknown_meter`: no meter is registered at this address")
SIGN_IN_REFUSED = (401, "`challenge_mismatch` (the nonce was not issued for this meter, or was used), "
                        "`challenge_expired`, `bad_login_signature` (not the meter's signature of the challenge) or "
                        "`unknown_meter`")
METER_ERRORS = (UNAUTHORIZED, FORBIDDEN, NOT_FOUND, INVALID)


def answers(*errors_: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI responses for the errors a route answers: ``ErrorOut``, with the codes each carries."""
    out: dict[int | str, dict[str, Any]] = {}
    for status, description in errors_:
        out[status] = {"model": ErrorOut, "description": description}
        if status == RATE_LIMITED[0]:
            out[status]["headers"] = {"Retry-After": {"description": "seconds to wait before trying again",
                                                      "schema": {"type": "integer"}}}
    return out


def _window(ctx: ApiContext, period_from: str | None, period_to: str | None) -> tuple[int, int]:
    start = parse_time(period_from, "period_from", ctx.settings.tz, 0)
    end = parse_time(period_to, "period_to", ctx.settings.tz, FAR_FUTURE)
    if end <= start:
        raise errors.InvalidRequest("period_to must be after period_from")
    return start, end


def _page(request: Request, count: int, page: int, page_size: int, results: list[Any]) -> dict[str, Any]:
    url = request.url
    nxt = str(url.include_query_params(page=page + 1)) if page * page_size < count else None
    prev = str(url.include_query_params(page=page - 1)) if page > 1 else None
    return {"count": count, "next": nxt, "previous": prev, "results": results}


def _meter(ctx: ApiContext, who: Principal, address: str) -> MeterRecord:
    who.check_meter(address)
    meter = ctx.index.meter(address)
    if meter is None:
        raise errors.NotFound(f"no meter {to_checksum_address(address)} is registered")
    return meter


# ---------------------------------------------------------------- health and sign-in


@router.get("/health", response_model=HealthOut, tags=["server"],
            responses={503: {"model": HealthOut, "description": "a part of the server is down or degraded"}})
async def health(ctx: Ctx, request: Request, response: Response) -> HealthOut:
    """The server's state and each part's (chain, batcher, relay, indexer) with the reason: HTTP 200 when every
    part is up, 503 otherwise; and how far the index has read the chain (no credentials needed)."""
    check: HealthCheck = request.app.state.health
    report = await check.report()
    if report.status != "ok":
        response.status_code = 503
    position = ctx.index.position()
    return HealthOut(status=report.status, reason=report.reason, parts=report.parts, chain_id=ctx.deployment.chain_id,
                     contract=ctx.deployment.address, index_block=position[0] if position else None,
                     meters=len(ctx.index.meters()), connected_meters=len(ctx.hub) if ctx.hub is not None else 0,
                     timezone=ctx.settings.timezone)


@router.post("/auth/challenge", response_model=ChallengeOut, tags=["sign-in"],
             dependencies=[Depends(signing_in)], responses=answers(UNKNOWN_METER, INVALID, RATE_LIMITED))
async def challenge(ctx: Ctx, meter: Annotated[str, Query(pattern=ADDRESS.pattern)]
                    ) -> ChallengeOut:
    """A nonce for a registered meter's key to sign (EIP-712 ``Login``), good once and for ``CHALLENGE_TTL``
    seconds. The nonce authenticates itself, so the server keeps no slot a flood could fill; requests are
    rate-limited per client."""
    nonce, expires = ctx.auth.challenge(meter, ctx.index.meter(meter) is not None, time.time())
    typed = login_typed_data(ctx.deployment.domain, meter, bytes.fromhex(nonce[2:]))
    typed["message"]["nonce"] = nonce
    return ChallengeOut(nonce=nonce, expires_at=iso(expires) or "", typed_data=typed)


@router.post("/auth/token", response_model=TokenOut, tags=["sign-in"],
             dependencies=[Depends(signing_in)], responses=answers(SIGN_IN_REFUSED, INVALID, RATE_LIMITED))
async def token(ctx: Ctx, body: TokenIn) -> TokenOut:
    """Trade a challenge signed by the meter's key for a bearer token to that meter's data."""
    known = ctx.index.meter(body.meter) is not None
    value, until = ctx.auth.sign_in(body.meter, body.nonce, body.signature, known, time.time())
    return TokenOut(token=value, expires_at=iso(until) or "", meter=to_checksum_address(body.meter))


@router.get("/auth/me", response_model=MeOut, tags=["sign-in"], responses=answers(UNAUTHORIZED))
async def me(who: Caller) -> MeOut:
    """Who these credentials belong to."""
    return MeOut(role=who.role, meter=who.meter)


# ---------------------------------------------------------------- meters


@router.get("/meters", response_model=list[MeterOut], tags=["meters"], responses=answers(UNAUTHORIZED))
async def meters(ctx: Ctx, who: Caller) -> list[MeterOut]:
    """Every meter (the operator), or the customer's own, each open bill with its demand-response credits."""
    shown = [ctx.meter_out(m) for m in ctx.index.meters() if who.is_operator or m.address == who.meter]
    credits = await _credits(ctx, None if who.is_operator else who.meter)
    return [_meter_with_credit(m, credits) for m in shown]


@router.get("/meters/{address}", response_model=MeterOut, tags=["meters"], responses=answers(*METER_ERRORS))
async def meter(ctx: Ctx, who: Caller, address: MeterAddress) -> MeterOut:
    """One meter: account reference, status, connection, last reading and open bill (with its demand-response
    credits and the amount payable after them)."""
    out = ctx.meter_out(_meter(ctx, who, address))
    return _meter_with_credit(out, await _credits(ctx, out.address))


async def _credits(ctx: ApiContext, meter: str | None) -> dict[tuple[str, int], int] | None:
    """The demand-response credits of each (meter, billing period) from the chain; None when it cannot be read."""
    if ctx.deployment.demand_response is None:
        return {}
    try:
        return await asyncio.to_thread(_read_credits, ctx, meter)
    except Exception as err:  # noqa: BLE001 - the bills still come from the index, without their credits
        log_event(log, "credits_not_read", logging.WARNING, error=f"{type(err).__name__}: {err}"[:300],
                  effect="bills are served without their demand-response credits until the chain answers")
        return None


def _read_credits(ctx: ApiContext, meter: str | None) -> dict[tuple[str, int], int]:
    return period_credits(DemandResponse(ChainClient(ctx.settings), ctx.deployment), meter)


def _bill_with_credit(bill: BillOut, credits: dict[tuple[str, int], int] | None) -> BillOut:
    """A bill with its demand-response credits and amount payable (as it is when the credits are unknown)."""
    if credits is None:
        return bill
    return bill.with_credit(credits.get((to_checksum_address(bill.meter), bill.period_id), 0))


def _meter_with_credit(meter: MeterOut, credits: dict[tuple[str, int], int] | None) -> MeterOut:
    """A meter whose open bill carries its demand-response credits."""
    return meter.model_copy(update={"open_bill": _bill_with_credit(meter.open_bill, credits)})


@router.get("/meters/{address}/readings", response_model=Page[ReadingOut | SettlementPeriodOut | ConsumptionOut],
            tags=["meters"], responses=answers(*METER_ERRORS))
async def readings(
    request: Request, ctx: Ctx, who: Caller, address: MeterAddress,
    period_from: TimeParam = None, period_to: TimeParamTo = None,
    group_by: Annotated[GroupBy | None, Query(description="halfhour: settlement periods with import, export, "
                                                          "price, cost and actual/estimated; or total by hour, "
                                                          "day, week or month (local time); without it, one "
                                                          "result per reading")] = None,
    order_by: OrderBy = "-period", page: PageNo = 1, page_size: PageSize = 100,
) -> dict[str, Any]:
    """Consumption in [period_from, period_to): per reading, or totalled by hour, day, week or month.

    Consumption is counted in clock hours. A reading's energy is spread over the hours its
    interval (`interval_start` to `interval_end`) covers, in whole Wh that add up to it exactly,
    and a window holds the hours that begin inside it (give whole hours or dates to count
    exactly the time you mean). Per reading, the list holds every reading with a share in those
    hours: its whole `energy_wh`, and `energy_in_window_wh`, its share in them. So the
    `energy_in_window_wh` of a window's readings add up to the same Wh as its hours, days, weeks
    or months.
    """
    m = _meter(ctx, who, address)
    start, end = _window(ctx, period_from, period_to)
    first, after = window_hours(start, end)
    offset = (page - 1) * page_size
    if group_by is GroupBy.HALFHOUR:
        periods = _settlement(ctx, m, start, end)
        if order_by == "-period":
            periods.reverse()
        return _page(request, len(periods), page, page_size, periods[offset:offset + page_size])
    if group_by is None:
        count, rows = ctx.index.readings(m.address, first, after, order_by == "-period", page_size, offset)
        results = [ReadingOut(interval_start=iso(r["interval_start"]) or "", interval_end=iso(r["timestamp"]) or "",
                              energy_wh=r["energy_wh"], consumption_kwh=r["energy_wh"] / 1000,
                              energy_in_window_wh=r["energy_in_window_wh"], seq=r["seq"],
                              register_wh=r["register_wh"], block=r["block"], tx_hash=r["tx_hash"],
                              source=r["source"]) for r in rows]
        return _page(request, count, page, page_size, results)
    buckets = group_hours(ctx.index.hours(m.address, first, after), group_by, ctx.settings.tz)
    if order_by == "-period":
        buckets.reverse()
    chosen = buckets[offset:offset + page_size]
    grouped = [ConsumptionOut(interval_start=iso(s) or "", interval_end=iso(e) or "", energy_wh=wh,
                              consumption_kwh=wh / 1000) for s, e, wh in chosen]
    return _page(request, len(buckets), page, page_size, grouped)


def _settlement(ctx: ApiContext, m: MeterRecord, start: int, end: int) -> list[SettlementPeriodOut]:
    """The meter's settlement periods that begin in [start, end) and that its readings cover, in time order."""
    first = max(start, m.opened_at) // PERIOD
    last = (min(end, m.last_timestamp + PERIOD) - 1) // PERIOD
    rows = ctx.index.half_hours(m.address, first, last) if last >= first else {}
    if not rows:
        return []
    schedule = ctx.index.schedule
    named = {sp.period: sp for sp in settlement_periods(min(rows) * PERIOD, (max(rows) + 1) * PERIOD, ctx.settings.tz)}
    out = []
    for p in sorted(rows):
        imported, exported, cost, credit, longest = rows[p]
        price_in, price_out = schedule.prices(p)
        actual = is_actual(longest, p, m.last_timestamp)
        sp = named[p]
        out.append(SettlementPeriodOut(
            interval_start=iso(p * PERIOD) or "", interval_end=iso((p + 1) * PERIOD) or "",
            settlement_date=sp.settlement_date.isoformat(), settlement_period=sp.number, import_wh=imported,
            export_wh=exported, import_band=schedule.band_of(p)[0], import_price_millipence_per_kwh=price_in,
            export_price_millipence_per_kwh=price_out, import_cost_micropence=cost, export_credit_micropence=credit,
            estimated=not actual, status="actual" if actual else "estimated"))
    return out


@router.get("/meters/{address}/restarts", response_model=list[RestartOut], tags=["meters"],
            responses=answers(*METER_ERRORS))
async def meter_restarts(ctx: Ctx, who: Caller, address: MeterAddress) -> list[RestartOut]:
    """The meter's exchanges (as the meter taken out or the one put in) and register resets, oldest first: each
    final read that closed a register, and the registers after it."""
    m = _meter(ctx, who, address)
    return [restart_out(r) for r in ctx.index.restarts(m.address)]


@router.get("/meters/{address}/band-costs", response_model=list[BandCostOut], tags=["meters"],
            responses=answers(*METER_ERRORS))
async def band_costs(
    ctx: Ctx, who: Caller, address: MeterAddress, period_from: TimeParam = None, period_to: TimeParamTo = None,
) -> list[BandCostOut]:
    """What the meter's energy cost at each import band or price in [period_from, period_to), cheapest first
    (from the settlement periods: a customer sees what off-peak, day and peak each cost them)."""
    m = _meter(ctx, who, address)
    start, end = _window(ctx, period_from, period_to)
    totals: dict[tuple[int | None, int], list[int]] = {}
    for sp in _settlement(ctx, m, start, end):
        key = (sp.import_band, sp.import_price_millipence_per_kwh)
        row = totals.setdefault(key, [0, 0, 0, 0, 0])
        for i, value in enumerate((1, sp.import_wh, sp.import_cost_micropence, sp.export_wh,
                                   sp.export_credit_micropence)):
            row[i] += value
    return [BandCostOut(band=band, import_price_millipence_per_kwh=price, periods=n, import_wh=wh,
                        import_cost_micropence=cost, export_wh=ex, export_credit_micropence=credit)
            for (band, price), (n, wh, cost, ex, credit) in sorted(totals.items(), key=lambda kv: kv[0][1])]


@router.get("/meters/{address}/bills", response_model=Page[BillOut], tags=["bills"],
            responses=answers(*METER_ERRORS))
async def meter_bills(
    request: Request, ctx: Ctx, who: Caller, address: MeterAddress,
    status: Annotated[Literal["open", "issued", "transferred"] | None, Query()] = None,
    period_from: TimeParam = None, period_to: TimeParamTo = None,
    min_amount_micropence: MinAmount = None,
    order_by: OrderBy = "-period", page: PageNo = 1, page_size: PageSize = 100,
) -> dict[str, Any]:
    """A meter's billing periods: the open one and those issued, overlapping [period_from, period_to)."""
    m = _meter(ctx, who, address)
    return await _bills(request, ctx, m.address, status, period_from, period_to, min_amount_micropence, order_by,
                        page, page_size)


@router.get("/bills", response_model=Page[BillOut], tags=["bills"],
            responses=answers(UNAUTHORIZED, FORBIDDEN, INVALID))
async def bills(
    request: Request, ctx: Ctx, who: Caller,
    meter: Annotated[str | None, Query(pattern=ADDRESS.pattern, description="one meter's bills only")] = None,
    status: Annotated[Literal["open", "issued", "transferred"] | None, Query()] = None,
    period_from: TimeParam = None, period_to: TimeParamTo = None,
    min_amount_micropence: MinAmount = None,
    order_by: OrderBy = "-period", page: PageNo = 1, page_size: PageSize = 100,
) -> dict[str, Any]:
    """Billing periods of every meter (the operator) or of the customer's own, with filters."""
    if meter is not None:
        who.check_meter(meter)
        meter = to_checksum_address(meter)
    elif not who.is_operator:
        meter = who.meter
    return await _bills(request, ctx, meter, status, period_from, period_to, min_amount_micropence, order_by, page,
                        page_size)


async def _bills(request: Request, ctx: ApiContext, meter: str | None, status: str | None, period_from: str | None,
                 period_to: str | None, min_amount: int | None, order_by: str, page: int, page_size: int
                 ) -> dict[str, Any]:
    start, end = _window(ctx, period_from, period_to)
    count, rows = ctx.index.periods(meter, status, start, end, min_amount, order_by == "-period", page_size,
                                    (page - 1) * page_size)
    credits = await _credits(ctx, meter) if rows else {}
    return _page(request, count, page, page_size, [_bill_with_credit(bill_out(p), credits) for p in rows])


@router.get("/meters/{address}/threshold", response_model=ThresholdOut, tags=["alerts"],
            responses=answers(*METER_ERRORS))
async def get_threshold(ctx: Ctx, who: Caller, address: MeterAddress) -> ThresholdOut:
    """A meter's hourly consumption limit and jump-alert settings."""
    return _threshold(ctx, _meter(ctx, who, address).address)


@router.put("/meters/{address}/threshold", response_model=ThresholdOut, tags=["alerts"],
            responses=answers(*METER_ERRORS))
async def put_threshold(ctx: Ctx, who: Caller, address: MeterAddress, body: ThresholdIn) -> ThresholdOut:
    """Set a meter's hourly consumption limit in Wh (0: no alerts; null: the default). Operator or customer."""
    m = _meter(ctx, who, address)
    ctx.index.set_limit(m.address, body.hourly_limit_wh, by=who.role)
    return _threshold(ctx, m.address)


def _threshold(ctx: ApiContext, meter: str) -> ThresholdOut:
    return ThresholdOut(meter=meter, hourly_limit_wh=ctx.index.limit_for(meter),
                        source="default" if ctx.index.limit_is_default(meter) else "meter",
                        jump_factor=ctx.index.rules.jump_factor, jump_min_w=ctx.index.rules.jump_min_w)


@router.get("/meters/{address}/consumption-alerts", response_model=Page[ConsumptionAlertOut], tags=["alerts"],
            responses=answers(*METER_ERRORS))
async def meter_consumption_alerts(
    request: Request, ctx: Ctx, who: Caller, address: MeterAddress,
    period_from: TimeParam = None, period_to: TimeParamTo = None, page: PageNo = 1, page_size: PageSize = 100,
) -> dict[str, Any]:
    """A meter's consumption alerts (hour over its limit, abrupt jump), newest first."""
    m = _meter(ctx, who, address)
    return _consumption_alerts(request, ctx, m.address, period_from, period_to, page, page_size)


@router.get("/consumption-alerts", response_model=Page[ConsumptionAlertOut], tags=["alerts"],
            responses=answers(UNAUTHORIZED, INVALID))
async def consumption_alerts(
    request: Request, ctx: Ctx, who: Caller,
    period_from: TimeParam = None, period_to: TimeParamTo = None, page: PageNo = 1, page_size: PageSize = 100,
) -> dict[str, Any]:
    """Consumption alerts of every meter (the operator) or the customer's own, newest first."""
    return _consumption_alerts(request, ctx, None if who.is_operator else who.meter, period_from, period_to, page,
                               page_size)


def _consumption_alerts(request: Request, ctx: ApiContext, meter: str | None, period_from: str | None,
                        period_to: str | None, page: int, page_size: int) -> dict[str, Any]:
    start, end = _window(ctx, period_from, period_to)
    count, rows = ctx.index.consumption_alerts(meter, start, end, page_size, (page - 1) * page_size)
    return _page(request, count, page, page_size, [consumption_alert_out(r) for r in rows])


# ---------------------------------------------------------------- tariffs and grid alerts


@router.get("/tariffs", response_model=list[TariffOut], tags=["tariffs"], responses=answers(UNAUTHORIZED))
async def tariffs(ctx: Ctx, who: Caller) -> list[TariffOut]:
    """Every tariff version set on chain, newest first: the first may still be to come (``effective_from``
    ahead); each prices the energy used from its ``effective_from`` until the next."""
    return [tariff_out(t) for t in ctx.index.tariffs()]


@router.get("/grid-alerts", response_model=Page[GridAlertOut], tags=["grid alerts"],
            responses=answers(UNAUTHORIZED, INVALID))
async def grid_alerts(
    request: Request, ctx: Ctx, who: Caller,
    active: Annotated[bool | None, Query(description="true: in force now; false: cleared or expired")] = None,
    region: Annotated[str | None, Query(max_length=32)] = None,
    page: PageNo = 1, page_size: PageSize = 100,
) -> dict[str, Any]:
    """Grid alerts, newest first: for one region (and all regions), or every one (the operator)."""
    if not who.is_operator:
        own = ctx.index.meter(who.meter or "")
        region = own.region if own is not None else ""
    now = int(time.time())
    count, rows = ctx.index.grid_alerts(active, region, now, page_size, (page - 1) * page_size)
    return _page(request, count, page, page_size, [grid_alert_out(r, now) for r in rows])


@router.get("/demand-response/events", response_model=list[DemandResponseEventOut], tags=["demand response"],
            responses=answers(UNAUTHORIZED))
async def demand_response_events(ctx: Ctx, who: Caller) -> list[DemandResponseEventOut]:
    """Demand-response events, newest first, read from the chain: status, modification number and each
    targeted meter's participation, with the baseline, actual and credit once credited. A customer sees
    the events that target their meter, and only their meter in them."""
    regions = {m.address: m.region for m in ctx.index.meters()}  # read here: the index belongs to this thread
    return await asyncio.to_thread(_demand_response_events, ctx, who, regions)


OPT_OUT_REFUSED = (409, "`opt_out_refused`: the opt-out (or its withdrawal) was refused: it signs an older "
                         "modification of the event, the event started or was cancelled, does not target the meter, "
                         "or the meter opted out (or withdrew) already")


@router.post("/demand-response/events/{event_id}/opt-out", response_model=OptOutOut, tags=["demand response"],
             responses=answers(UNAUTHORIZED, FORBIDDEN, INVALID, OPT_OUT_REFUSED))
async def demand_response_opt_out(
    ctx: Ctx, who: Caller, event_id: Annotated[int, Path(ge=1, le=2**64 - 1)], body: OptOutIn,
) -> OptOutOut:
    """Relay a meter's signed opt-out of an event's current terms to the chain (``RELAYER_KEY`` pays): the meter
    signs the EIP-712 ``OptOut(meter, eventId, modification, terms)`` under the DemandResponse domain with its own
    key. Refused before any transaction when it signs an older modification or is not the meter's signature;
    the contract refuses it at or after the start. A change of the event lapses it."""
    return await _relay_opt_out(ctx, who, event_id, body, withdrawal=False)


@router.post("/demand-response/events/{event_id}/opt-out/withdrawal", response_model=OptOutOut,
             tags=["demand response"], responses=answers(UNAUTHORIZED, FORBIDDEN, INVALID, OPT_OUT_REFUSED))
async def demand_response_opt_out_withdrawal(
    ctx: Ctx, who: Caller, event_id: Annotated[int, Path(ge=1, le=2**64 - 1)], body: OptOutIn,
) -> OptOutOut:
    """Relay a meter's signed withdrawal of its opt-out of an event's current terms (EIP-712
    ``OptOutWithdrawal(meter, eventId, modification, terms)``), before the start. The meter takes part again and
    cannot opt out of the same terms again."""
    return await _relay_opt_out(ctx, who, event_id, body, withdrawal=True)


async def _relay_opt_out(ctx: ApiContext, who: Principal, event_id: int, body: OptOutIn, withdrawal: bool
                         ) -> OptOutOut:
    """Check an opt-out or withdrawal against the event's current modification and terms, then relay it."""
    who.check_meter(body.meter)
    if ctx.deployment.demand_response is None:
        raise errors.NotFound("this deployment has no demand-response contract")
    if ctx.opt_outs is None:
        ctx.opt_outs = OptOutRelayer(ctx.settings, ctx.deployment)
    relayer = ctx.opt_outs
    current = await asyncio.to_thread(relayer.dr.signed_terms, event_id)
    if current is None:
        raise errors.NotFound(f"no demand-response event {event_id}")
    modification, terms, _ = current
    if body.modification != modification:
        raise errors.OptOutRefused(f"the signature is for modification {body.modification} of event {event_id}, "
                                   f"which is at modification {modification} now: sign its current terms")
    signer = recover_optout_signer(ctx.deployment.demand_response_domain, body.meter, event_id, modification, terms,
                                   body.signature, withdrawal=withdrawal)
    if signer is None or signer.lower() != body.meter.lower():
        kind = "OptOutWithdrawal" if withdrawal else "OptOut"
        raise errors.InvalidRequest(f"the signature is not the meter's EIP-712 {kind}(meter, eventId, modification, "
                                    "terms) of this event's current terms")
    tx_hash = await relayer.relay(event_id, body.meter, modification, body.signature, withdrawal=withdrawal)
    return OptOutOut(event_id=event_id, meter=to_checksum_address(body.meter), modification=modification,
                     tx_hash=tx_hash)


@router.get("/meters/{address}/demand-response", response_model=list[MeterDemandResponseOut],
            tags=["demand response"], responses=answers(*METER_ERRORS))
async def meter_demand_response(
    ctx: Ctx, who: Caller, address: MeterAddress, period_from: TimeParam = None, period_to: TimeParamTo = None,
) -> list[MeterDemandResponseOut]:
    """The demand-response events that target the meter and whose window overlaps [period_from, period_to),
    oldest first (cancelled events left out), read from the chain: the window, the meter's opt-out, and its
    baseline against its actual consumption, over the window and in each half hour of it. The baseline is the
    one credited once the event is credited; before that, for an event active or completed, it is computed
    now from the chain by the same method (`baseline_kind` `provisional`); an event to come has only its window."""
    m = _meter(ctx, who, address)
    start, end = _window(ctx, period_from, period_to)
    if ctx.deployment.demand_response is None:
        return []
    windows = await asyncio.to_thread(_meter_windows, ctx, m.address, start, end)
    return [_meter_window_out(w) for w in windows]


def _meter_windows(ctx: ApiContext, meter: str, start: int, end: int) -> list[MeterWindow]:
    return meter_windows(DemandResponse(ChainClient(ctx.settings), ctx.deployment), meter, start, end)


def _meter_window_out(w: MeterWindow) -> MeterDemandResponseOut:
    """One event's window for one meter, for the API."""
    credit = w.credit.amount if w.credit else None
    return MeterDemandResponseOut(
        event_id=w.event_id, programme=w.programme, status=w.status.name.lower(),  # type: ignore[arg-type]
        start=iso(w.terms.start) or "", end=iso(w.terms.end) or "",
        signal_kind=w.terms.signal_kind.name.lower(),  # type: ignore[arg-type]
        signal_value=w.terms.signal_value, credit_rate=w.terms.credit_rate, opted_out=w.opted_out,
        baseline_kind=w.baseline_kind,  # type: ignore[arg-type]
        baseline_wh=w.baseline_wh, actual_wh=w.actual_wh, credit_micropence=credit,
        credit_pounds=format_pounds(credit) if credit is not None else None,
        period_id=w.credit.period_id if w.credit else None,
        half_hours=[DrHalfHourOut(start=iso(h.start) or "", end=iso(h.start + PERIOD) or "", baseline_wh=h.baseline_wh,
                                  actual_wh=h.actual_wh) for h in w.half_hours])


def _demand_response_events(ctx: ApiContext, who: Principal, regions: dict[str, str]) -> list[DemandResponseEventOut]:
    """The events from one read of the contract's logs; ``regions`` is each registered meter's region."""
    if ctx.deployment.demand_response is None:
        return []
    book = DemandResponse(ChainClient(ctx.settings), ctx.deployment).book()
    now = time.time()
    out = []
    for booked in sorted(book.events.values(), key=lambda b: -b.id):
        targeted = ([to_checksum_address(m) for m in sorted(booked.meters)] if booked.meters
                    else [a for a, r in regions.items() if r in booked.regions])
        if not who.is_operator:
            targeted = [m for m in targeted if m.lower() == (who.meter or "").lower()]
            if not targeted:
                continue
        rows = []
        for meter in targeted:
            c = booked.credits.get(meter.lower())
            rows.append(ParticipationOut(
                meter=meter,
                state="opted_out" if meter.lower() in booked.opted_out else "credited" if c else "participating",
                baseline_wh=c.baseline_wh if c else None, actual_wh=c.actual_wh if c else None,
                credit=c.amount if c else None, period_id=c.period_id if c else None))
        terms = booked.terms
        out.append(DemandResponseEventOut(
            id=booked.id, modification=booked.modification, programme=booked.programme,
            status=booked.status(now).name.lower(),  # type: ignore[arg-type]
            notice_at=iso(booked.notice_at) or "", start=iso(terms.start) or "", end=iso(terms.end) or "",
            signal_kind=terms.signal_kind.name.lower(),  # type: ignore[arg-type]
            signal_value=terms.signal_value, credit_rate=terms.credit_rate, regions=sorted(booked.regions),
            meters=rows))
    return out


# ---------------------------------------------------------------- live updates


def live_message(ctx: ApiContext, update: Update) -> dict[str, Any] | None:
    """The JSON a dashboard receives for one live update."""
    payload = update.payload
    if update.kind in ("bill", "meter"):
        return {"type": update.kind, "meter": ctx.meter_out(payload).model_dump()}
    if update.kind == "connection":
        return {"type": "connection", "address": payload["address"], "connected": payload["connected"]}
    if update.kind == "tariff":
        return {"type": "tariff", "tariff": tariff_out(payload).model_dump()}
    if update.kind == "grid_alert":
        return {"type": "grid_alert", "alert": grid_alert_out(payload, int(time.time())).model_dump()}
    if update.kind == "consumption_alert":
        return {"type": "consumption_alert", "alert": consumption_alert_out(payload).model_dump()}
    if update.kind in ("message", "messages_read"):
        return {"type": update.kind, **payload}  # already JSON, built by server.api.messages
    return None


@router.websocket("/live")
async def live(ws: WebSocket) -> None:
    """Live updates for the dashboard: bills, meters, connections, tariffs, grid and consumption alerts, messages.

    The credentials come in the first message, ``{"type": "auth", "key": ...}`` or ``{"type": "auth", "token":
    ...}``, within ``AUTH_TIMEOUT`` seconds: never in the URL, which access logs and proxies keep (``?key=`` or
    ``?token=`` is refused with ``credentials_in_url``). Refused credentials get an ``error`` message and close
    code 1008.
    """
    ctx: ApiContext = ws.app.state.ctx
    await ws.accept()
    try:
        key, token = await _live_credentials(ws, ctx.settings)
        who = ctx.auth.authenticate(key, token)
        if not who.is_operator and ctx.index.meter(who.meter or "") is None:
            raise errors.NotFound(f"no meter {who.meter} is registered")
    except WebSocketDisconnect:
        return
    except errors.SmartMeterError as err:
        await ws.send_json({"type": "error", "code": err.code, "message": err.message})
        await ws.close(POLICY_VIOLATION, err.code)
        return
    own = None if who.is_operator else ctx.index.meter(who.meter or "")
    sub = ctx.feed.subscribe(own.address if own else None, own.region if own else "")
    reader = asyncio.ensure_future(_drain(ws))
    dropped = asyncio.ensure_future(sub.closed.wait())
    try:
        await ws.send_json({"type": "hello", "role": who.role, "meter": who.meter,
                            "timezone": ctx.settings.timezone})
        while True:
            getter = asyncio.ensure_future(sub.queue.get())
            done, _ = await asyncio.wait({getter, reader, dropped}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                if dropped in done:
                    await ws.close(1013, "too far behind; reload")
                return
            message = live_message(ctx, getter.result())
            if message is not None:
                await ws.send_json(message)
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        ctx.feed.unsubscribe(sub)
        reader.cancel()
        dropped.cancel()


async def _live_credentials(ws: WebSocket, settings: Settings) -> tuple[str | None, str | None]:
    """The API key and bearer token of the live feed's first message (``LIVE_AUTH``); Unauthorized when the URL
    carries credentials, or no such message comes in time. A refusal never repeats what the message held."""
    if any(name in ws.query_params for name in URL_CREDENTIALS):
        raise errors.CredentialsInUrl()
    try:
        message = await asyncio.wait_for(ws.receive(), settings.auth_timeout)
    except asyncio.TimeoutError:
        raise errors.Unauthorized(f"no credentials in {settings.auth_timeout:g} s; send {LIVE_AUTH} first") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    body: Any = None
    if isinstance(text, str) and len(text) <= settings.max_message_bytes:
        try:
            body = json.loads(text)
        except ValueError:
            body = None
    if isinstance(body, dict) and body.get("type") == "auth":
        key, token = body.get("key"), body.get("token")
        if (isinstance(key, str) and key) or (isinstance(token, str) and token):
            return (key if isinstance(key, str) else None), (token if isinstance(token, str) else None)
    raise errors.Unauthorized(f"the first message must be {LIVE_AUTH}")


async def _drain(ws: WebSocket) -> None:
    """Read (and ignore) what the browser sends, until it goes away."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
