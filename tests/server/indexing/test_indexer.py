"""The indexer against a real Ganache: idempotent, resumable, rebuildable from the chain, and
agreeing with the contract's own bill arithmetic."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest

from common.chain import AsyncChainClient
from common.events import ChainEvent
from common.settings import ROOT
from common.tariff import CLOCK_LOCAL, PriceRule, TariffVersion
from server.app import open_index
from server.indexing.history import GroupBy, group_hours, spread_over_hours, window_hours
from server.indexing.index import DERIVED_TABLES, Index
from server.indexing.indexer import Indexer, rebuild
from tests.support import both_indexes

HOUR = 3_600
LONDON = ZoneInfo("Europe/London")


@pytest.fixture
async def chain_client(base_settings, deployment) -> AsyncIterator[AsyncChainClient]:
    client = AsyncChainClient(base_settings, deployment, base_settings.gateway_key)
    yield client
    await client.close()


def dump(index: Index) -> dict[str, list[tuple]]:
    """Every derived table's rows, in a stable order (consumption alerts without their row ids)."""
    out = {}
    for table in DERIVED_TABLES:
        rows = index.db.execute(f"SELECT * FROM {table}").fetchall()
        if table == "consumption_alerts":
            rows = [r[1:] for r in rows]
        out[table] = sorted(rows, key=repr)
    return out


def readings(start: int, first_seq: int, count: int, base_wh: int, step_wh: int = 300) -> list[tuple[int, int, int]]:
    return [(first_seq + i, start + i * 900, base_wh + (i + 1) * step_wh) for i in range(count)]


@both_indexes
async def test_catching_up_twice_applies_nothing_new_and_resumes_after_new_events(new_index_url, 
        tmp_path, base_settings, deployment, chain_client, new_meter, write_readings):
    index = open_index(base_settings.replace(index_url=new_index_url(), data_dir=tmp_path), deployment)
    indexer = Indexer(deployment, index, chain_client)
    meter = new_meter()
    start = int(time.time()) - 20 * HOUR
    await write_readings(meter, readings(start, 1, 8, 10_000))
    assert await indexer.catch_up() > 0
    assert index.meter(meter.address).last_seq == 8
    assert await indexer.catch_up() == 0  # idempotent: nothing after the recorded position
    await write_readings(meter, readings(start + 8 * 900, 9, 4, 10_000 + 8 * 300))
    resumed = Indexer(deployment, index, chain_client)  # a restart: only the position on disk carries over
    assert await resumed.catch_up() == 4  # four ReadingRecorded
    count, rows = index.readings(meter.address, 0, 2**32, False, 100, 0)
    assert count == 12 and [r["seq"] for r in rows] == list(range(1, 13))
    index.close()


@both_indexes
async def test_applying_the_same_events_again_changes_nothing(new_index_url, 
        tmp_path, base_settings, deployment, chain_client, new_meter, write_readings):
    index = open_index(base_settings.replace(index_url=new_index_url(), data_dir=tmp_path), deployment)
    meter = new_meter()
    await write_readings(meter, readings(int(time.time()) - 10 * HOUR, 1, 6, 10_000))
    await Indexer(deployment, index, chain_client).catch_up()
    before = dump(index)
    block = int(await chain_client.request("eth_blockNumber", []), 16)
    logs = await chain_client.request("eth_getLogs", [{"address": deployment.address, "fromBlock": hex(0),
                                                        "toBlock": hex(block)}])
    indexer = Indexer(deployment, index, chain_client)
    events = [e for e in (indexer.decoder.decode(raw) for raw in logs) if e is not None]
    assert index.apply(events, {}).events == 0
    assert dump(index) == before
    index.close()


@both_indexes
async def test_the_open_bill_breakdown_matches_the_chain_across_a_tariff_change(new_index_url, 
        snapshot, tmp_path, base_settings, deployment, chain_client, new_meter, write_readings, billing):
    index = open_index(base_settings.replace(index_url=new_index_url(), data_dir=tmp_path), deployment)
    meter = new_meter()
    now = billing.now()
    change = (now + base_settings.max_future_skew) // 1_800 * 1_800 + 1_800
    start = change - 5 * 900
    await write_readings(meter, [(1, now - 20 * HOUR, 10_000, 0)])
    bands = [0 if 1 <= h < 11 else 2 if 32 <= h < 38 else 1 for h in range(48)]
    await asyncio.to_thread(billing.set_tariff, TariffVersion(
        change, 61_111, PriceRule.banded(bands, [8_500, 31_234, 35_000]), PriceRule.flat(15_000), CLOCK_LOCAL))
    billing.client.w3.provider.make_request("evm_increaseTime", [change + 6 * 900 - now])
    billing.client.w3.provider.make_request("evm_mine", [])
    await write_readings(meter, [(2 + i, start + i * 900, 10_300 + i * 300, 50 * i) for i in range(10)])
    await Indexer(deployment, index, chain_client).catch_up()
    period, chain = index.meter(meter.address).period, billing.bill(meter.address)
    assert (period.energy_wh, period.energy_cost, period.standing_charge, period.amount_due) == (
        chain.period_energy_wh, chain.energy_cost, chain.standing_charge, chain.amount_due)
    assert (period.export_wh, period.export_credit) == (chain.period_export_wh, chain.export_credit) == (
        450, 250 * base_settings.tariff_export_rate + 200 * 15_000)  # 250 Wh before the change, 200 after
    index.close()


@both_indexes
async def test_rebuilding_from_the_chain_reproduces_the_live_index_and_keeps_thresholds(new_index_url, 
        tmp_path, server, base_settings, deployment, new_meter, write_readings, billing):
    from tests.server.conftest import indexed, last_event

    meter = new_meter()
    server.index.set_limit(meter.address, 250, by="operator")
    start = int(time.time()) - 20 * HOUR
    await write_readings(meter, readings(start, 1, 12, 10_000, 200))
    await indexed(server, last_event(await asyncio.to_thread(billing.close_billing_period, meter.address)))
    live = dump(server.index)
    rebuilt_at = tmp_path / "copy"
    copy = open_index(server.settings.replace(data_dir=rebuilt_at, index_url=new_index_url()), deployment)
    copy.set_limit(meter.address, 250, by="operator")
    await rebuild(server.settings, deployment, copy)
    assert dump(copy) == live
    assert copy.limit_for(meter.address) == 250
    assert any(row[0] == meter.address for row in dump(copy)["consumption_alerts"])
    copy.close()


@both_indexes
def test_the_reindex_command_rebuilds_the_index_of_a_data_dir(new_index_url, tmp_path, base_settings, deployment):
    settings = base_settings.replace(index_url=new_index_url(), data_dir=tmp_path / "data")
    done = subprocess.run([sys.executable, "scripts/reindex.py"], cwd=ROOT, env=settings.as_env() | {
        "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rebuilt the index from the chain" in done.stdout
    index = open_index(settings, deployment)
    assert index.position() is not None and len(index.meters()) >= 1
    index.close()


@both_indexes
def test_an_index_of_another_deployment_is_emptied_when_opened(new_index_url, tmp_path, base_settings, deployment):
    settings = base_settings.replace(index_url=new_index_url(), data_dir=tmp_path)
    index = open_index(settings, deployment)
    index.set_limit(deployment.address, 100, by="operator")
    with index.db:
        index.db.execute("INSERT INTO position VALUES ('index', 999999, 0)")
    index.close()
    redeployed = dataclasses.replace(deployment, address="0x" + "ab" * 20)
    index = open_index(settings, redeployed)
    assert index.position() is None  # rebuilt from the new contract's events at the next catch-up
    assert index.limit_for(deployment.address) == 100
    index.close()
    index = open_index(settings, redeployed)
    assert index.position() is None
    index.close()


@both_indexes
def test_a_windows_readings_and_its_hours_add_up_to_the_same_energy(new_index_url, tmp_path):
    """For any window, the readings listed with their share in it and the hourly (and daily) totals
    agree to the Wh, and the list holds exactly the readings with a share in the window's hours."""
    rng = random.Random(12)
    index = Index(tmp_path / "index.sqlite", LONDON, url=new_index_url())
    meter, opened = "0x" + "ab" * 20, 1_790_000_000
    tariff = dict(zip(("effectiveFrom", "standingCharge", "clock", "importKind", "importRate", "exportKind",
                       "exportRate", "importBands", "importBandRates", "exportBands", "exportBandRates"),
                      TariffVersion.flat(24_670, 57_210).as_struct(), strict=True))  # as version 1: from time 0
    events = [ChainEvent("TariffChanged", {"version": 1, **tariff}, 1, 0, "0x01"),
              ChainEvent("MeterRegistered", {"meter": meter, "accountRef": b"\x42" * 32, "region": b"north",
                                             "openingWh": 10_000, "openedAt": opened}, 1, 1, "0x01")]
    ts, register, span = opened, 10_000, []
    for seq in range(1, 301):
        # Intervals from a second to five hours, some ending on the hour, with any energy.
        ts += rng.choice([1, 59, 600, 1_234, 3_600, 7_200, 18_000, rng.randint(1, 5 * HOUR)])
        if rng.random() < 0.1:
            ts += -ts % HOUR
        register += rng.choice([0, 1, rng.randint(0, 40), rng.randint(0, 5_000)])
        events.append(ChainEvent("ReadingRecorded", {"meter": meter, "seq": seq, "timestamp": ts,
                                                     "energyWh": register, "exportWh": 0,
                                                     "periodImportCost": (register - 10_000) * 24_670,
                                                     "periodExportCredit": 0}, 2 + seq, 0, "0x02"))
        span.append(ts)
    index.apply(events, {1: opened})
    everything = index.readings(meter, 0, 2**40, False, 10_000, 0)[1]
    assert len(everything) == 300 and sum(r["energy_in_window_wh"] for r in everything) == register - 10_000
    for _ in range(300):
        a, b = sorted(rng.randint(opened - 2 * HOUR, ts + 2 * HOUR) for _ in range(2))
        if rng.random() < 0.3:
            a, b = a - a % HOUR, b - b % HOUR
        first, after = window_hours(a, b + 1)
        count, listed = index.readings(meter, first, after, rng.random() < 0.5, 10_000, 0)
        hours = index.hours(meter, first, after)
        in_window = sum(r["energy_in_window_wh"] for r in listed)
        assert in_window == sum(wh for _, wh in hours) == sum(
            wh for _, _, wh in group_hours(hours, GroupBy.DAY, LONDON)), (a, b)
        sharing = {r["seq"] for r in everything if any(
            first <= hour < after for hour, _ in spread_over_hours(r["interval_start"], r["timestamp"], 1))}
        assert count == len(listed) and {r["seq"] for r in listed} == sharing, (a, b)
    index.close()
