"""A meter exchange and a register reset followed everywhere: the index (SQLite and PostgreSQL) and the API hold
the chain's bill across both, the statement adds up, the independent verifier agrees, and the gateway takes the
reset meter's new sequence from seq 1 (its cursor restarts on the event)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from common.billing import Billing
from common.eip712 import ReadingData
from common.events import RECORD_FIELDS, ChainEvent
from common.messages import Ack, Bill
from common.settings import ROOT, Settings
from server.api.auth import OPERATOR_KEY_FILE
from server.app import ServerApp
from server.indexing.index import Index
from tests.server.conftest import indexed, last_event
from tests.server.endpoint.test_gateway import next_of
from tests.server.indexing.test_index_engines import synthetic_chain
from tests.server.indexing.test_index_rollback import rows
from tests.support import both_indexes
from tests.tools.test_verify import LyingNode, add_to_word

API = "/api/v1"
LONDON = ZoneInfo("Europe/London")
METER_EXCHANGED = "0x" + keccak(text="MeterExchanged(address,address,uint256,uint64,uint64)").hex()
HOUR = 3_600


async def operator_get(settings: Settings, path: str, **params: Any) -> Any:
    key = (settings.data_dir / "api" / OPERATOR_KEY_FILE).read_text().strip()
    async with httpx.AsyncClient(base_url=settings.http_url, timeout=30, headers={"X-API-Key": key}) as api:
        response = await api.get(API + path, params=params)
        assert response.status_code == 200, (path, response.text)
        return response.json() if "json" in response.headers["content-type"] else response.text


@both_indexes
async def test_an_exchange_and_a_reset_reach_the_index_the_api_the_statement_and_the_verifier(
        server: ServerApp, server_settings: Settings, new_meter: Any, write_readings: Any, billing: Billing) -> None:
    old: LocalAccount = new_meter()  # opened a day ago at 10,000 Wh
    start = int(time.time()) - 20 * HOUR
    await write_readings(old, [(i, start + i * 900, 10_000 + i * 300, i * 10) for i in range(1, 5)])
    new: LocalAccount = Account.create()
    exchanged_at = start + 5 * 900  # the final read adds 250 Wh and 5 Wh exported since seq 4
    await asyncio.to_thread(billing.exchange_meter, old.address, new.address, 11_450, 45, exchanged_at, 3, 0)
    await write_readings(new, [(i, exchanged_at + i * 900, 3 + i * 200, i) for i in range(1, 4)])
    reset_at = exchanged_at + 4 * 900  # the register rolls over to 0 after 100 Wh more
    await asyncio.to_thread(billing.reset_register, new.address, 703, 3, reset_at, 0, 0)
    position = await write_readings(new, [(1, reset_at + 900, 150, 1), (2, reset_at + 1_800, 320, 2)])
    await indexed(server, position)

    chain_bill = billing.bill(new.address)
    assert chain_bill.period_energy_wh == 1_200 + 250 + 600 + 100 + 320
    record = server.index.meter(new.address)
    assert record is not None and record.last_seq == 2 and record.last_energy_wh == 320
    p = record.period
    assert (p.period_id, p.energy_wh, p.export_wh, p.energy_cost, p.export_credit, p.amount_due) == (
        chain_bill.period_id, chain_bill.period_energy_wh, chain_bill.period_export_wh, chain_bill.energy_cost,
        chain_bill.export_credit, chain_bill.amount_due)

    retired = await operator_get(server_settings, f"/meters/{old.address}")
    assert (retired["status"], retired["replaced_by"]) == ("retired", new.address)
    successor = await operator_get(server_settings, f"/meters/{new.address}")
    assert successor["status"] == "active" and successor["account_ref"] == retired["account_ref"]
    assert successor["open_bill"]["amount_due_micropence"] == chain_bill.amount_due
    restarts = await operator_get(server_settings, f"/meters/{new.address}/restarts")
    assert [(r["kind"], r["meter"], r["final_import_wh"], r["opening_import_register_wh"]) for r in restarts] == [
        ("exchange", old.address, 250, 3), ("reset", new.address, 100, 0)]
    readings = await operator_get(server_settings, f"/meters/{new.address}/readings", period_from=str(start),
                                  period_to=str(reset_at + 2 * HOUR), order_by="period")
    assert [(r["seq"], r["source"], r["energy_wh"]) for r in readings["results"]] == [
        (1, "meter", 200), (2, "meter", 200), (3, "meter", 200), (3, "reset", 100), (1, "meter", 150),
        (2, "meter", 170)]
    csv_text = await operator_get(server_settings, f"/meters/{new.address}/bills/{p.period_id}/statement.csv")
    assert "restart,exchange," in csv_text and "restart,reset," in csv_text
    assert f"summary,import_wh,{chain_bill.period_energy_wh}" in csv_text

    node = shutil.which("node")
    assert node is not None
    deployment_file = server_settings.deployments_dir / f"{server.deployment.chain_id}.json"

    def verify(rpc: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(node), str(ROOT / "tools" / "verify" / "check.mjs"), "--rpc", rpc, "--deployment",
                               str(deployment_file), "--meter", new.address, "--json"], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)

    result = await asyncio.to_thread(verify, server_settings.chain_rpc_url)
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads(result.stdout)["rows"]
    assert row["meter"] == new.address and row["agrees"] and row["readings"] == 5
    assert int(row["open"]["importWh"]) == chain_bill.period_energy_wh

    def dearer_final_read(log: dict[str, Any]) -> None:  # the exchange's final read a micropence dearer
        if log["topics"][0] == METER_EXCHANGED and log["topics"][1][-40:].lower() == old.address[2:].lower():
            add_to_word(log, 0, 1 << 160)

    with LyingNode(server_settings.chain_rpc_url, dearer_final_read) as lying:
        result = await asyncio.to_thread(verify, lying.url)
    assert result.returncode == 1, result.stdout + result.stderr
    (row,) = json.loads(result.stdout)["rows"]
    assert not row["agrees"] and any(p.startswith(f"exchange for {new.address}") for p in row["problems"])


async def test_the_gateway_takes_a_reset_meters_new_sequence_from_seq_1(
        server: ServerApp, new_meter: Any, link_for: Any, billing: Billing) -> None:
    meter: LocalAccount = new_meter()
    link = link_for(meter)
    await link.connect()
    now = int(time.time())
    for seq in (1, 2):
        await link.send_reading(ReadingData(meter.address, seq, now - 200 + 60 * seq, 10_000 + 100 * seq))
        assert (await next_of(link, Ack)).seq == seq
        assert (await next_of(link, Bill)).seq == seq
    await link.close()
    assert server.store.cursor(meter.address).seq == 2  # type: ignore[union-attr]

    receipt = await asyncio.to_thread(billing.reset_register, meter.address, 10_200, 0, now - 80, 0, 0)
    await indexed(server, last_event(receipt))
    assert server.store.cursor(meter.address).seq == 0  # type: ignore[union-attr]

    welcome = await link.connect()
    assert (welcome.last_seq, welcome.last_energy_wh) == (0, 0)
    await link.send_reading(ReadingData(meter.address, 1, now - 20, 80))
    assert (await next_of(link, Ack)).seq == 1
    bill = await next_of(link, Bill)
    assert (bill.seq, bill.period_energy_wh) == (1, 280)
    assert billing.meter(meter.address).last_seq == 1
    await link.close()


def synthetic_restarts(old: str, new: str, opened: int) -> list[ChainEvent]:
    """A flat tariff, a meter with three readings (block 2-4), its exchange for ``new`` with a final read an hour
    after opening (block 5), the new meter's first reading (block 6) and its register reset (block 7)."""
    rate = 24_670
    events = synthetic_chain(old, opened, 3)
    final = {"seq": 3, "timestamp": opened + 3_600, "energyWh": 11_200, "exportWh": 0,
             "periodImportCost": 1_200 * rate, "periodExportCredit": 0}
    events.append(ChainEvent("MeterExchanged", {"meter": old, "newMeter": new, "finalRecord": pack(final),
                                                "openingImportWh": 0, "openingExportWh": 0}, 5, 0, "0x05"))
    events.append(ChainEvent("ReadingRecorded", {
        "meter": new, "seq": 1, "timestamp": opened + 4_500, "energyWh": 300, "exportWh": 0,
        "periodImportCost": 1_500 * rate, "periodExportCredit": 0}, 6, 0, "0x06"))
    reset = {**final, "seq": 1, "timestamp": opened + 4_500, "energyWh": 300, "periodImportCost": 1_500 * rate}
    events.append(ChainEvent("RegisterReset", {"meter": new, "finalRecord": pack(reset), "importWh": 0,
                                               "exportWh": 0}, 7, 0, "0x07"))
    return events


def pack(fields: dict[str, int]) -> int:
    """A ``ReadingRecorded``-layout record from its named fields."""
    return sum(fields[name] << low for name, low, _ in RECORD_FIELDS)


@both_indexes
def test_the_index_undoes_an_exchange_and_a_reset_in_replaced_blocks(tmp_path: Path, new_index_url: Any) -> None:
    old, new, opened = "0x" + "ab" * 20, "0x" + "cd" * 20, 1_790_000_000
    events = synthetic_restarts(old, new, opened)
    times = {b: opened + b for b in range(1, 8)}
    upto_fork = Index(tmp_path / "fork.sqlite", LONDON, url=new_index_url())
    upto_fork.apply([e for e in events if e.block <= 4], times)
    live = Index(tmp_path / "live.sqlite", LONDON, url=new_index_url())
    live.apply([e for e in events if e.block <= 4], times, final=4)
    live.apply([e for e in events if e.block > 4], times, final=4)  # journaled: not final yet
    successor, retired = live.meter(new), live.meter(old)
    assert successor is not None and retired is not None
    assert (successor.period.energy_wh, successor.last_seq, successor.last_energy_wh) == (1_500, 0, 0)
    assert (retired.replaced_by, retired.active, retired.period.status) == (new, False, "transferred")
    assert [(r["kind"], r["import_wh"]) for r in live.restarts(new)] == [("exchange", 300), ("reset", 0)]
    assert [r.source for r, _, _ in live.period_readings(new, 1)] == ["meter"] * 3 + ["exchange", "meter"]

    live.rollback(4)
    assert rows(live) == rows(upto_fork)
    assert live.meter(new) is None and live.meter(old).replaced_by is None  # type: ignore[union-attr]
    live.apply(events, times, final=4)  # the new chain brings them again
    assert live.meter(new).period.energy_wh == 1_500  # type: ignore[union-attr]
    for index in (live, upto_fork):
        index.close()
