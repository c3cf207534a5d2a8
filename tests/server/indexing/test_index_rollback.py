"""The index undoes replaced blocks: whatever events of blocks not yet final changed (readings,
hourly totals, the open period, meter state, consumption alerts, the position) goes back exactly,
and applying the new chain's events after gives what applying them once does."""

from __future__ import annotations

import time
from typing import Any

from common.chain import AsyncChainClient
from server.app import open_index
from server.indexing.index import DERIVED_TABLES, Index
from server.indexing.indexer import Indexer
from tests.server.indexing.test_indexer import chain_client, readings  # noqa: F401 - the fixture is used by name
from tests.support import both_indexes

HOUR = 3_600


def rows(index: Index) -> dict[str, list[tuple[Any, ...]]]:
    """Every table derived from events, in a stable order (without the undo bookkeeping and alert ids)."""
    out = {}
    for table in DERIVED_TABLES:
        if table in ("journal", "blocks"):
            continue
        found = index.db.execute(f"SELECT * FROM {table}").fetchall()  # noqa: S608 - fixed names
        if table == "consumption_alerts":
            found = [r[1:] for r in found]
        out[table] = sorted(found, key=repr)
    return out


async def events_of(chain: AsyncChainClient, deployment, indexer: Indexer) -> list[Any]:
    head = int(await chain.request("eth_blockNumber", []), 16)
    logs = await chain.request("eth_getLogs", [{"address": deployment.address, "fromBlock": hex(deployment.block),
                                                "toBlock": hex(head)}])
    return [e for e in (indexer.decoder.decode(raw) for raw in logs) if e is not None]


@both_indexes
async def test_rolling_back_blocks_not_yet_final_restores_the_index_as_it_was_at_the_fork(new_index_url, 
        tmp_path, base_settings, deployment, chain_client, new_meter, write_readings):  # noqa: F811
    meter = new_meter()
    start = int(time.time()) - 20 * HOUR
    await write_readings(meter, readings(start, 1, 4, 10_000))
    # Then readings far above the hourly limit, each in a block of its own: hourly totals, alerts, the period.
    for seq in range(5, 9):
        await write_readings(meter, [(seq, start + (seq - 1) * 900, 10_000 + 4 * 300 + (seq - 4) * 4_000)])
    full = open_index(base_settings.replace(index_url=new_index_url(), data_dir=tmp_path / "full"), deployment)
    indexer = Indexer(deployment, full, chain_client)
    everything = await events_of(chain_client, deployment, indexer)
    mine = [e for e in everything if e.args.get("meter", "").lower() == meter.address.lower()]
    recorded = [e for e in mine if e.name == "ReadingRecorded"]
    fork = next(e.block for e in recorded if e.args["seq"] == 6)  # seq 7 and 8 vanish
    final = next(e.block for e in recorded if e.args["seq"] == 4)  # seq 5 on are not final yet

    upto_fork = open_index(base_settings.replace(index_url=new_index_url(), data_dir=tmp_path / "fork"), deployment)
    upto_fork.apply([e for e in everything if e.block <= fork], {})
    expected = rows(upto_fork)

    live = open_index(base_settings.replace(index_url=new_index_url(), data_dir=tmp_path / "live", confirmations=2),
                      deployment)
    live.apply([e for e in everything if e.block <= final], {}, final)
    live.apply([e for e in everything if e.block > final], {}, final)
    assert live.db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] > 0
    assert any(r[0].lower() == meter.address.lower() for r in rows(live)["consumption_alerts"])
    assert rows(live) != expected

    affected = live.rollback(fork)
    assert rows(live) == expected  # readings, hourly totals, the period, the meter, alerts, the position
    assert [m.address for m in affected] == [meter.address]
    assert live.meter(meter.address).last_seq == 6 and live.meter(meter.address).period == \
        upto_fork.meter(meter.address).period

    # The new chain brings the same readings again (submitted anew): applied once, as if never undone.
    full.apply(everything, {})
    live.apply([e for e in everything if e.block > fork], {}, final)
    assert rows(live) == rows(full)
    live.finalize(max(e.block for e in everything))
    assert live.db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0
    for index in (full, upto_fork, live):
        index.close()


@both_indexes
async def test_events_of_final_blocks_leave_no_journal(new_index_url, tmp_path, base_settings, deployment, chain_client,  # noqa: F811
                                                      new_meter, write_readings):
    meter = new_meter()
    await write_readings(meter, readings(int(time.time()) - 10 * HOUR, 1, 3, 10_000))
    index = open_index(base_settings.replace(index_url=new_index_url(), data_dir=tmp_path, confirmations=2), deployment)
    indexer = Indexer(deployment, index, chain_client)
    events = await events_of(chain_client, deployment, indexer)
    index.apply(events, {}, final=max(e.block for e in events))
    assert index.db.execute("SELECT COUNT(*) FROM journal").fetchone()[0] == 0
    assert index.recent_blocks() == []
    index.close()


@both_indexes
async def test_catching_up_undoes_blocks_replaced_while_the_server_was_stopped(new_index_url, 
        tmp_path, base_settings, deployment, chain_client, new_meter, write_readings):  # noqa: F811
    meter = new_meter()
    await write_readings(meter, readings(int(time.time()) - 10 * HOUR, 1, 3, 10_000))
    index = open_index(base_settings.replace(index_url=new_index_url(), data_dir=tmp_path, confirmations=2), deployment)
    indexer = Indexer(deployment, index, chain_client)
    events = await events_of(chain_client, deployment, indexer)
    last = max(e.block for e in events)
    index.apply(events, {}, final=last - 1)  # the last block was not final when applied
    assert index.meter(meter.address).last_seq == 3
    with index.db:  # as if the node had since replaced that block by another
        index.db.execute("UPDATE blocks SET hash=? WHERE number=?", ("0x" + "11" * 32, last))
    await indexer.catch_up()
    # Undone back to the block before, then read again from the chain: the same, and nothing twice.
    assert index.meter(meter.address).last_seq == 3
    count, _ = index.readings(meter.address, 0, 2**32, False, 100, 0)
    assert count == 3
    index.close()
