"""A gateway killed with SIGKILL between ``ack`` and inclusion submits the reading after
restart, and the chain never records it twice."""

from __future__ import annotations

import asyncio
import time

import pytest
from web3 import Web3

from common.eip712 import ReadingData
from common.events import unpack_record
from common.messages import Ack, Bill
from tests.server.endpoint.test_gateway import next_of
from tests.support import ServerProcess  # noqa: F401 - other tests import it from here too


def recorded_count(w3: Web3, deployment, meter: str, seq: int) -> int:
    contract = w3.eth.contract(address=deployment.address, abi=deployment.abi)
    logs = contract.events.ReadingRecorded().get_logs(from_block=deployment.block, argument_filters={"meter": meter})
    return sum(1 for e in logs if unpack_record(int(e.args.record))["seq"] == seq)


@pytest.mark.parametrize("chain_loses_the_transaction", [False, True], ids=["tx-survives", "tx-lost"])
async def test_sigkill_between_ack_and_inclusion_loses_nothing_and_duplicates_nothing(
    server_settings, deployment, ganache, chain, new_meter, link_for, tmp_path, chain_loses_the_transaction
):
    proc = ServerProcess(server_settings, tmp_path / "server.log")
    await proc.start()
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    chain.w3.provider.make_request("miner_stop", [])
    try:
        await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 20, 10_500))
        assert (await next_of(link, Ack)).seq == 1
        await asyncio.sleep(1.0)  # the batcher has sent its transaction; the chain is not mining
        proc.kill()
        assert recorded_count(chain.w3, deployment, meter.address, 1) == 0
    finally:
        if chain_loses_the_transaction:
            await asyncio.to_thread(ganache.restart)  # the pending pool is gone with the old process
        else:
            chain.w3.provider.make_request("miner_start", [])
    chain._nonces.clear()
    await proc.start()
    link = link_for(meter)
    await link.connect()
    deadline = time.monotonic() + 60
    while chain.w3.eth.contract(address=deployment.address, abi=deployment.abi).functions.meterState(
            meter.address).call()[4] < 1:
        assert time.monotonic() < deadline, "the reading never reached the chain"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)  # room for a wrong second submission to land
    assert recorded_count(chain.w3, deployment, meter.address, 1) == 1
    await link.close()
    assert proc.interrupt() == 0
    assert "server_stopped" in proc.log_path.read_text()


async def test_graceful_shutdown_closes_meters_with_going_away(server_settings, deployment, new_meter, link_for,
                                                               tmp_path):
    proc = ServerProcess(server_settings, tmp_path / "server.log")
    await proc.start()
    link = link_for(new_meter())
    await link.connect()
    assert proc.interrupt() == 0
    from websockets.exceptions import ConnectionClosed

    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await link.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert "server_stopped" in proc.log_path.read_text()


async def test_a_bill_arrives_after_restart_for_a_reading_acked_before(server_settings, deployment, chain, new_meter,
                                                                       link_for, tmp_path):
    proc = ServerProcess(server_settings, tmp_path / "server.log")
    await proc.start()
    meter = new_meter()
    link = link_for(meter)
    await link.connect()
    chain.w3.provider.make_request("miner_stop", [])
    try:
        await link.send_reading(ReadingData(meter.address, 1, int(time.time()) - 20, 10_500))
        await next_of(link, Ack)
        proc.kill()
    finally:
        chain.w3.provider.make_request("miner_start", [])
    await proc.start()
    link = link_for(meter)
    welcome = await link.connect()
    if welcome.last_seq < 1:
        bill = await next_of(link, Bill, timeout=30)
        assert bill.seq == 1
    await link.close()
    proc.interrupt()
