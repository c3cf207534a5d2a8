"""Statements from the REST API against a running server on a real Ganache: an issued bill's and the
open period's, as PDF (read back as text) and CSV, matching the chain; the access rules of bills."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from dataclasses import dataclass

import httpx
from eth_account.signers.local import LocalAccount
from pypdf import PdfReader

from common.billing import Billing
from common.tariff import CLOCK_LOCAL, PriceRule, TariffVersion, format_kwh, format_pounds
from server.app import ServerApp
from tests.server.api.test_api import API, add_customer, error_of
from tests.server.api.test_api import api as api  # noqa: F401 - fixtures
from tests.server.api.test_api import op as op  # noqa: F401
from tests.server.conftest import indexed

HOUR = 3_600


@dataclass
class Scenario:
    """A household with an issued bill (period 1) and an open period (2) priced by two tariff versions."""

    meter: LocalAccount
    other: LocalAccount
    key: str
    issued_tx: str
    change: int


async def issued_and_open(server: ServerApp, new_meter, write_readings, billing: Billing) -> Scenario:
    """Period 1: ten hours of half-hourly import and export, then issued. Period 2: a gap, then readings
    across a time-of-use tariff change (the chain's clock moved past it; the snapshot puts it back)."""
    meter, other = new_meter(region="north"), new_meter(region="south")
    key = add_customer(server, meter, "meter-s")
    add_customer(server, other, "meter-t")
    opened = billing.meter(meter.address).last_timestamp
    await write_readings(meter, [(i, opened + i * 1_800, 10_000 + i * 350, i * 40) for i in range(1, 21)])
    receipt = await asyncio.to_thread(billing.close_billing_period, meter.address)
    now = billing.now()
    change = (now + 300) // 1_800 * 1_800 + 1_800
    bands = [0 if 1 <= h < 11 else 2 if 32 <= h < 38 else 1 for h in range(48)]
    await asyncio.to_thread(billing.set_tariff, TariffVersion(
        change, 61_111, PriceRule.banded(bands, [8_500, 31_234, 35_000]), PriceRule.flat(5_500), CLOCK_LOCAL))
    billing.client.w3.provider.make_request("evm_increaseTime", [change + 2 * HOUR - now])  # type: ignore[arg-type]
    billing.client.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    last = opened + 20 * 1_800
    rows = [(21, last + 10 * HOUR, 10_000 + 20 * 350 + 9_000, 800)]
    rows += [(22 + i, change - HOUR + i * 900, 26_400 + i * 200, 800 + i * 30) for i in range(8)]
    await indexed(server, await write_readings(meter, rows))
    return Scenario(meter, other, key, "0x" + bytes(receipt["transactionHash"]).hex(), change)


def pdf_text(data: bytes) -> str:
    """Every page's text, as a PDF reader extracts it."""
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def sections(text: str) -> dict[str, list[dict[str, str]]]:
    """A statement CSV's sections, each a list of rows keyed by its header."""
    out: dict[str, list[dict[str, str]]] = {}
    header: list[str] = []
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        if row[0] == "section":
            header = row
            continue
        out.setdefault(row[0], []).append(dict(zip(header, row, strict=True)))
    return out


def summary(text: str) -> dict[str, str]:
    return {r["field"]: r["value"] for r in sections(text)["summary"]}


async def test_a_customer_gets_the_statements_of_an_issued_bill_and_the_open_period_as_the_chain_has_them(
        snapshot, server, new_meter, write_readings, billing):
    s = await issued_and_open(server, new_meter, write_readings, billing)
    mine = {"X-API-Key": s.key}
    issued = next(e.args for e in billing.contract.events.BillIssued().get_logs(
        from_block=billing.deployment.block, argument_filters={"meter": s.meter.address}))
    recorded = billing.contract.events.ReadingRecorded().get_logs(
        from_block=billing.deployment.block, argument_filters={"meter": s.meter.address})
    open_bill = billing.bill(s.meter.address)
    async with httpx.AsyncClient(base_url=server.settings.http_url, headers=mine, timeout=60) as api:
        url = f"{API}/meters/{s.meter.address}/bills"
        pdf = await api.get(f"{url}/1/statement.pdf")
        assert pdf.status_code == 200, pdf.text
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.headers["content-disposition"] == 'attachment; filename="statement-meter-s-period-1.pdf"'
        text = pdf_text(pdf.content)
        flat = re.sub(r"\s+", "", text)  # long hashes wrap across lines in the PDF
        assert "Electricity statement" in text and "provisional" not in text.lower()
        for expected in ("Holder of meter-s", "1 Test Street", "0x" + "42" * 32, s.meter.address, s.issued_tx,
                         format_pounds(issued["amountDue"]), format_pounds(issued["importCost"]),
                         format_pounds(issued["standingCharge"]), "-" + format_pounds(issued["exportCredit"]),
                         format_kwh(issued["importWh"]), "Consumption by day"):
            assert re.sub(r"\s+", "", expected) in flat, expected
        first_period = [e for e in recorded if e.args.record & 0xFFFFFFFF <= 20]
        assert len(first_period) == 20
        for event in first_period:  # the appendix: every reading's transaction, so it can be looked up
            assert "0x" + bytes(event.transactionHash).hex() in flat

        issued_csv = (await api.get(f"{url}/1/statement.csv")).text
        top = summary(issued_csv)
        assert (top["status"], int(top["period_id"]), int(top["amount_due_micropence"])) == (
            "issued", 1, issued["amountDue"])
        assert (int(top["import_wh"]), int(top["energy_charge_micropence"]), int(top["credits_micropence"])) == (
            issued["importWh"], issued["importCost"], issued["exportCredit"])
        assert (int(top["opening_import_register_wh"]), int(top["closing_import_register_wh"])) == (
            10_000, 10_000 + 20 * 350)
        assert top["issued_tx"] == s.issued_tx and top["customer_name"] == "Holder of meter-s"
        days = sections(issued_csv)["day"]
        assert sum(int(d["import_wh"]) for d in days) == issued["importWh"]
        assert sum(int(d["import_cost_micropence"]) for d in days) == issued["importCost"]

        provisional = await api.get(f"{url}/2/statement.pdf")
        assert provisional.status_code == 200
        assert provisional.headers["content-disposition"].endswith('"statement-meter-s-period-2-provisional.pdf"')
        text = pdf_text(provisional.content)
        assert "Electricity statement (provisional)" in text and "PROVISIONAL" in text
        assert format_pounds(open_bill.amount_due) in text
        open_csv = sections((await api.get(f"{url}/2/statement.csv")).text)
        top = {r["field"]: r["value"] for r in open_csv["summary"]}
        assert (top["status"], int(top["amount_due_micropence"]), int(top["import_wh"])) == (
            "provisional", open_bill.amount_due, open_bill.period_energy_wh)
        assert [int(t["version"]) for t in open_csv["tariff"]][-1] == len(billing.versions())
        assert int(open_csv["tariff"][-1]["start"]) == s.change  # the version that started within the period
        assert [int(r["seq"]) for r in open_csv["reading"]] == list(range(21, 30))
        assert sum(int(d["import_cost_micropence"]) for d in open_csv["day"]) == open_bill.energy_cost
        assert sum(int(d["export_credit_micropence"]) for d in open_csv["day"]) == open_bill.export_credit


async def test_statements_follow_the_access_rules_of_bills(snapshot, api, op, server, new_meter, write_readings,
                                                           billing):
    s = await issued_and_open(server, new_meter, write_readings, billing)
    url = f"{API}/meters/{{}}/bills/{{}}/statement.{{}}"
    assert error_of(await api.get(url.format(s.meter.address, 1, "pdf"))) == (401, "unauthorized")
    theirs = await api.get(url.format(s.other.address, 1, "csv"), headers={"X-API-Key": s.key})
    assert error_of(theirs) == (403, "forbidden")
    missing = await api.get(url.format(s.meter.address, 3, "pdf"), headers=op)
    assert error_of(missing) == (404, "not_found") and "periods are 1 to 2" in missing.json()["error"]["message"]
    assert error_of(await api.get(url.format(s.meter.address, 0, "pdf"), headers=op)) == (422, "invalid_request")
    # The operator may have anyone's, and an account without readings yet has an empty provisional one.
    empty = await api.get(url.format(s.other.address, 1, "csv"), headers=op)
    assert empty.status_code == 200
    top = summary(empty.text)
    assert (top["status"], top["import_wh"], top["amount_due_micropence"]) == ("provisional", "0", "0")
    assert "reading" not in sections(empty.text)
