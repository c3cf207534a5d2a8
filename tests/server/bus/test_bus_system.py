"""The server on the bus: stateless gateways log readings to JetStream and cores write them to the chain; bills
come back to the meters through the gateway holding their connection."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator

import pytest

from common.devchain import free_port
from common.eip712 import ReadingData
from common.events import unpack_record
from common.messages import Ack, Bill
from server.app import ServerApp
from server.bus.gateway_app import GatewayApp
from tests.server.endpoint.test_gateway import next_of
from tests.support import ServerProcess


@pytest.fixture
async def bus_server(server_settings, deployment, nats_url) -> AsyncIterator[ServerApp]:
    """A core with a gateway in its process, on the bus."""
    app = await ServerApp.start(server_settings.replace(bus_url=nats_url, bus_partitions=4), deployment)
    await app.relay.caught_up.wait()
    yield app
    await app.stop()


async def test_a_reading_on_the_bus_is_acknowledged_recorded_once_and_billed(bus_server, new_meter, link_for):
    account = new_meter()
    link = link_for(account)
    await link.connect()
    now = int(time.time())
    for seq in (1, 2):
        await link.send_reading(ReadingData(account.address, seq, now - 60 + seq * 20, 10_000 + seq * 50))
    assert (await next_of(link, Ack, timeout=60)).seq == 1
    assert (await next_of(link, Ack, timeout=60)).seq == 2
    bills = [await next_of(link, Bill, timeout=90) for _ in range(2)]
    assert [b.seq for b in bills] == [1, 2] and bills[-1].energy_wh == 10_100
    await link.close()


async def test_a_second_stateless_gateway_serves_the_same_meters(bus_server, server_settings, deployment, new_meter,
                                                                 link_for, nats_url):
    settings = server_settings.replace(bus_url=nats_url, bus_partitions=4, server_port=free_port(),
                                       server_role="gateway")
    other = await GatewayApp.start(settings, deployment)
    try:
        account = new_meter()
        link = link_for(account)
        link.url = settings.server_url
        await link.connect()
        await link.send_reading(ReadingData(account.address, 1, int(time.time()) - 30, 10_400))
        assert (await next_of(link, Ack, timeout=60)).seq == 1
        bill = await next_of(link, Bill, timeout=90)
        assert bill.seq == 1 and bill.energy_wh == 10_400
        await link.close()
        await asyncio.sleep(0)
    finally:
        await other.stop()


async def test_a_publish_retried_after_a_lost_acknowledgement_is_recorded_once(bus_server, new_meter, link_for,
                                                                             chain, deployment):
    account = new_meter()
    link = link_for(account)
    welcome = await link.connect()
    assert welcome.last_used_seq == 0
    gateway = bus_server.gateway
    assert isinstance(gateway, GatewayApp)
    first = ReadingData(account.address, 1, int(time.time()) - 40, 10_050)
    await link.send_reading(first)
    assert (await next_of(link, Ack, timeout=60)).seq == 1
    # The gateway's publish of seq 2 "loses" its acknowledgement: it is published again, as a retry would.
    logged = gateway.log.duplicates
    second = ReadingData(account.address, 2, int(time.time()) - 20, 10_100)
    signed = await link.send_reading(second)
    assert (await next_of(link, Ack, timeout=60)).seq == 2
    await gateway.log.append([(second, signed.signature, first.timestamp)])
    assert gateway.log.duplicates == logged + 1
    # And the meter resends it to the gateway after logging in again: a duplicate, acknowledged as such.
    await link.close()
    link = link_for(account)
    await link.connect()
    await link.send_reading(second)
    assert (await next_of(link, Ack, timeout=60)).status == "duplicate"
    contract = chain.w3.eth.contract(address=deployment.address, abi=deployment.abi)
    deadline = time.monotonic() + 60
    while contract.functions.meterState(account.address).call()[4] < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)
    await asyncio.sleep(1.5)  # room for a second copy to land
    logs = contract.events.ReadingRecorded().get_logs(from_block=deployment.block,
                                                      argument_filters={"meter": account.address})
    assert sorted(unpack_record(int(e.args.record))["seq"] for e in logs) == [1, 2]
    await link.close()


async def test_a_gateway_machine_runs_its_gateway_workers_as_processes_and_stops_them_on_ctrl_c(
        bus_server, server_settings, new_meter, link_for, nats_url, tmp_path):
    settings = server_settings.replace(bus_url=nats_url, bus_partitions=4, server_port=free_port(), http_port=0,
                                       server_role="gateway", gateway_workers=2, data_dir=tmp_path / "edge")
    shutil.copytree(server_settings.data_dir / "tls", settings.data_dir / "tls")  # one CA, as docs/scaling-out.md says
    edge = ServerProcess(settings, tmp_path / "edge.log")
    await edge.start(ready="gateway_workers_listening")
    try:
        log = edge.log_path.read_text()
        pids = [int(p) for p in re.findall(r"gateway_workers_listening .*?pids=([\d,]+)", log)[0].split(",")]
        assert len(pids) == 2
        account = new_meter()
        link = link_for(account)
        link.url = settings.server_url
        await link.connect()
        await link.send_reading(ReadingData(account.address, 1, int(time.time()) - 30, 10_300))
        assert (await next_of(link, Bill, timeout=90)).energy_wh == 10_300
        await link.close()
        assert edge.interrupt() == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        ServerProcess.kill_all()
