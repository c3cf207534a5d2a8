"""The relay: catch-up after its own restart and after a chain restart, grid alerts to meters."""

from __future__ import annotations

import asyncio
import time

from common.eip712 import ReadingData
from common.messages import Ack, Bill, GridAlertMessage
from tests.server.endpoint.test_gateway import next_of


async def test_relay_restart_catches_up_and_delivers_missed_bills(server, new_meter, link_for):
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    relay_task = server.tasks[0]
    server.relay.stop()
    await relay_task
    before = server.relay.position
    await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 30, 10_200))
    await next_of(link, Ack)
    for _ in range(200):  # the batcher mines it while the relay is away
        if server.store.count() == 0:
            break
        await asyncio.sleep(0.05)
    assert server.store.count() == 0
    server.relay._stopping = False
    server.tasks[0] = asyncio.get_running_loop().create_task(server.relay.run())
    bill = await next_of(link, Bill)
    assert bill.seq == 1 and bill.energy_wh == 10_200
    assert server.relay.position > before
    await link.close()


async def test_relay_and_batcher_survive_a_chain_restart(server, ganache, new_meter, link_for, billing):
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    await asyncio.to_thread(ganache.restart)
    await asyncio.wait_for(server.relay.caught_up.wait(), timeout=60)
    await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 30, 10_300))
    await next_of(link, Ack)
    bill = await next_of(link, Bill, timeout=60)
    assert bill.seq == 1
    billing.client._nonces.clear()
    assert billing.meter(meter.address).last_seq == 1
    await link.close()


async def test_grid_alert_reaches_meters_in_its_region_only(server, new_meter, link_for, billing):
    north, south = new_meter(region="north"), new_meter(region="south")
    links = [link_for(north), link_for(south)]
    for link in links:
        await link.connect()
    await asyncio.to_thread(billing.raise_grid_alert, 1, "reduce_usage", "north", "Demand peak: please reduce usage",
                            int(time.time()) + 600)
    alert = await next_of(links[0], GridAlertMessage)
    assert (alert.kind, alert.region, alert.active) == ("reduce_usage", "north", True)
    everywhere = await asyncio.to_thread(billing.raise_grid_alert, 2, "frequency_dip", "", "Grid frequency dip",
                                         int(time.time()) + 600)
    got = await next_of(links[1], GridAlertMessage)
    assert got.kind == "frequency_dip"  # the south meter never saw the north-only alert first
    alert_id = billing.events("GridAlert", everywhere)[0].args.id
    await asyncio.to_thread(billing.clear_grid_alert, alert_id)
    cleared = await next_of(links[1], GridAlertMessage)
    assert (cleared.id, cleared.active) == (alert_id, False)
    for link in links:
        await link.close()


async def test_meter_logging_in_later_receives_active_alerts(server, new_meter, link_for, billing):
    await asyncio.to_thread(billing.raise_grid_alert, 0, "maintenance", "", "Planned maintenance tonight",
                            int(time.time()) + 600)
    await asyncio.sleep(0.5)
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    alert = await next_of(link, GridAlertMessage)
    assert alert.kind in ("maintenance", "reduce_usage", "frequency_dip") and alert.active
    await link.close()
