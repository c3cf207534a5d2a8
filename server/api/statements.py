"""The statement routes: one billing period's statement as PDF or CSV, drawn up from the index.

Access is as for bills: the operator may have any meter's, a customer their own meter's. The
statement is ``common.statement``'s model, built from the index's copy of the chain (the period's
figures, its readings with their blocks and transactions, the tariff schedule) and the customer
record, and rendered by ``common.statement_render``; the open period's is marked provisional.
Rendering a long period's appendix takes a while, so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import Response

from common.chain import ChainClient
from common.demand_response import statement_credits
from common.errors import NotFound
from common.statement import Account, ChainPlace, Issue, Statement, build_statement
from common.statement_render import filename, to_csv, to_pdf
from common.tariff import OpenBill
from server.api.auth import Principal
from server.api.routes import (
    FORBIDDEN,
    INVALID,
    UNAUTHORIZED,
    ApiContext,
    Caller,
    Ctx,
    MeterAddress,
    _meter,
    answers,
)

__all__ = ["router", "statement_of", "MAX_PERIOD"]

router = APIRouter(prefix="/api/v1", tags=["bills"])
#: The contract numbers periods in 32 bits.
MAX_PERIOD = 2**32 - 1
PeriodNo = Annotated[int, Path(ge=1, le=MAX_PERIOD, description="the billing period's number (`period_id`)")]
NO_PERIOD = (404, "`not_found`: no meter is registered at this address, or it has no billing period of this number")
MISMATCH = (500, "`statement_mismatch`: the index's copy of the period does not add up to the chain's figures it "
                 "holds (rebuild the index: scripts/reindex.py)")
# Declared with their JSON content, as the routes' own media type is the document's.
STATEMENT_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": answer["description"],
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
    for status, answer in answers(UNAUTHORIZED, FORBIDDEN, NO_PERIOD, INVALID, MISMATCH).items()
}


class PdfResponse(Response):
    """A PDF document."""

    media_type = "application/pdf"


class CsvResponse(Response):
    """A CSV document."""

    media_type = "text/csv"


def statement_of(ctx: ApiContext, who: Principal, address: str, period_id: int) -> Statement:
    """The statement of one billing period of a meter the caller may see, from the index.

    Raises:
        Forbidden: a customer asking for another meter's statement.
        NotFound: no such meter, or no such period of it.
        StatementMismatch: the index's copy does not add up to the figures it holds (rebuild it).
    """
    meter = _meter(ctx, who, address)
    period = ctx.index.period(meter.address, period_id)
    if period is None:
        raise NotFound(f"meter {meter.address} has no billing period {period_id}: its periods are 1 to "
                       f"{meter.period.period_id} ({meter.period.period_id} is open)")
    readings = ctx.index.period_readings(meter.address, period_id)
    if readings:
        first, imported, exported = readings[0]
        opening = (first.import_register_wh - imported, first.export_register_wh - exported)
    else:
        opening = (meter.last_energy_wh, meter.last_export_wh)
    customer = ctx.customers.by_meter(meter.address)
    issue = (Issue(period.issued_tx, period.issued_at or 0)
             if period.status == "issued" and period.issued_tx else None)
    figures = OpenBill(period.period_id, period.period_start, period.period_end, period.energy_wh, period.export_wh,
                       period.energy_cost, period.export_credit, period.standing_charge)
    credits = statement_credits(ChainClient(ctx.settings), ctx.deployment, meter.address, period_id)
    return build_statement(
        account=Account(meter.address, customer.meter_name if customer else None, meter.account_ref, meter.region,
                        customer.name if customer else "", customer.address if customer else ""),
        chain=ChainPlace(ctx.deployment.chain_id, ctx.deployment.address), figures=figures,
        amount_due=period.amount_due - sum(c.amount for c in credits), issue=issue, opening=opening,
        readings=[r for r, _, _ in readings], schedule=ctx.index.schedule, tz=ctx.settings.tz,
        drawn_up_at=int(time.time()), credits=credits, restarts=ctx.index.period_restarts(meter.address, period_id))


def _download(st: Statement, extension: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename(st, extension)}"', "Cache-Control": "no-store"}


@router.get("/meters/{address}/bills/{period}/statement.pdf", response_class=PdfResponse,
            responses={200: {"description": "the statement as a PDF document (A4), provisional for the open period",
                             "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}},
                       **STATEMENT_ERRORS})
async def statement_pdf(ctx: Ctx, who: Caller, address: MeterAddress, period: PeriodNo) -> Response:
    """A billing period's statement as PDF: account, customer, period, registers, consumption by day, tariffs, energy
    and standing charges, credits, amount due, and an appendix of every reading with its block and transaction."""
    st = await asyncio.to_thread(statement_of, ctx, who, address, period)
    return PdfResponse(await asyncio.to_thread(to_pdf, st), headers=_download(st, "pdf"))


@router.get("/meters/{address}/bills/{period}/statement.csv", response_class=CsvResponse,
            responses={200: {"description": "the statement as CSV sections (summary, credit, tariff, day, reading) in "
                                            "Wh, micropence, millipence and unix seconds",
                             "content": {"text/csv": {"schema": {"type": "string"}}}},
                       **STATEMENT_ERRORS})
async def statement_csv(ctx: Ctx, who: Caller, address: MeterAddress, period: PeriodNo) -> Response:
    """A billing period's statement as CSV: the PDF's content in the project's integer units, one section a table."""
    st = await asyncio.to_thread(statement_of, ctx, who, address, period)
    return CsvResponse(await asyncio.to_thread(to_csv, st), headers=_download(st, "csv"))
