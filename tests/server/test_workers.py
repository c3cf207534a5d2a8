"""Gateway workers (``GATEWAY_WORKERS`` > 1): meters on every worker get their bills and alerts, and a
worker killed mid-stream loses nothing it acknowledged and records nothing twice."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator

import pytest
from websockets.exceptions import ConnectionClosed

from common.eip712 import ReadingData
from common.events import unpack_record
from common.messages import Ack, Bill, GridAlertMessage
from server.app import ServerApp
from server.workers import WorkerPool
from tests.server.test_gateway import next_of
from tests.support import ServerProcess


@pytest.fixture
async def pool_server(server_settings, deployment) -> AsyncIterator[ServerApp]:
    """A server whose meters' endpoint runs in two worker processes."""
    app = await ServerApp.start(server_settings.replace(gateway_workers=2), deployment)
    await app.relay.caught_up.wait()
    yield app
    await app.stop()


def pool_of(app: ServerApp) -> WorkerPool:
    assert isinstance(app.gateway, WorkerPool)
    return app.gateway


async def on_both_workers(app: ServerApp, new_meter, link_for, most: int = 24) -> list:
    """Connect meters until each worker holds at least one; (account, link) pairs."""
    pool = pool_of(app)
    connected = []
    for _ in range(most):
        account = new_meter()
        link = link_for(account)
        await link.connect()
        connected.append((account, link))
        held = pool.meters_by_worker()
        if len(connected) >= 2 and all(held.values()):
            return connected
    raise AssertionError(f"the kernel put {most} connections on one worker: {pool.meters_by_worker()}")


async def test_bills_and_alerts_reach_meters_on_every_worker(pool_server, new_meter, link_for, billing):
    meters = await on_both_workers(pool_server, new_meter, link_for)
    for account, link in meters:
        await link.send_reading(ReadingData(account.address, 1, int(time.time()) - 20, 10_250))
    for account, link in meters:
        assert (await next_of(link, Ack)).seq == 1
        bill = await next_of(link, Bill)
        assert bill.meter.lower() == account.address.lower() and bill.seq == 1
        assert bill.energy_wh == 10_250 and bill.period_energy_wh >= 250
    await asyncio.to_thread(billing.raise_grid_alert, 2, "reduce_usage", "north", "Ease off", int(time.time()) + 600)
    for _, link in meters:
        alert = await next_of(link, GridAlertMessage)
        assert alert.message == "Ease off"
    held = pool_of(pool_server).meters_by_worker()
    assert sorted(m for ms in held.values() for m in ms) == sorted(a.address.lower() for a, _ in meters)
    gateway = (await pool_server.health.report()).parts.gateway
    assert gateway is not None and gateway.state.value == "up"
    assert (gateway.workers, gateway.workers_up, gateway.meters_connected) == (2, 2, len(meters))
    for _, link in meters:
        await link.close()


async def _stream(account, link_for, count: int, acked: set[int], start: float) -> int:
    """Send readings 1..count, each after the previous one's ack; reconnect and go on from the server's
    ``lastUsedSeq`` when the connection drops. Returns how many times it reconnected."""
    link = link_for(account)
    welcome = await link.connect()
    reconnects = 0
    seq = welcome.last_used_seq + 1
    while seq <= count:
        try:
            await link.send_reading(ReadingData(account.address, seq, int(start) + seq * 10, 10_000 + seq * 10))
            ack = await next_of(link, Ack, timeout=20)
            assert ack.seq == seq and ack.status in ("queued", "duplicate")
            acked.add(seq)
            seq += 1
            await asyncio.sleep(0.02)
        except (ConnectionClosed, OSError):
            reconnects += 1
            assert reconnects < 20
            for _ in range(100):
                try:
                    link = link_for(account)
                    welcome = await link.connect()
                    break
                except (ConnectionClosed, OSError, asyncio.TimeoutError):
                    await asyncio.sleep(0.2)
            # Everything acknowledged is durable: the server's cursor is never behind it.
            assert welcome.last_used_seq >= max(acked, default=0)
            seq = welcome.last_used_seq + 1
    await link.close()
    return reconnects


async def test_a_worker_killed_mid_stream_loses_nothing_acknowledged_and_duplicates_nothing(
        pool_server, new_meter, link_for, chain, deployment):
    pool = pool_of(pool_server)
    placed = await on_both_workers(pool_server, new_meter, link_for, most=24)
    accounts = [a for a, _ in placed]
    for _, link in placed:
        await link.close()
    count, start = 40, time.time() - 1_000
    acked: dict[str, set[int]] = {a.address: set() for a in accounts}
    streams = asyncio.gather(*(_stream(a, link_for, count, acked[a.address], start) for a in accounts))
    while min(len(s) for s in acked.values()) < 10:
        assert not streams.done(), streams.exception()
        await asyncio.sleep(0.05)
    # The streams' connections are new ones, which the kernel spreads over the workers as it likes: kill a worker
    # that holds some of them now (the first one could hold none, and the test would see no reconnect).
    victim = next(number for number, meters in pool.meters_by_worker().items() if meters)
    pid = pool.pids()[victim]
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if pool.listening() < 2:
            break
        await asyncio.sleep(0.05)
    gateway = (await pool_server.health.report()).parts.gateway
    assert gateway is not None and (gateway.state.value, gateway.workers_up) == ("degraded", 1)
    assert "being started again" in gateway.reason
    reconnects = await asyncio.wait_for(streams, 180)
    assert sum(reconnects) >= 1, "no meter was on the killed worker"
    assert all(acked[a.address] == set(range(1, count + 1)) for a in accounts)
    contract = chain.w3.eth.contract(address=deployment.address, abi=deployment.abi)
    deadline = time.monotonic() + 60
    while any(contract.functions.meterState(a.address).call()[4] < count for a in accounts):
        assert time.monotonic() < deadline, "the readings never all reached the chain"
        await asyncio.sleep(0.3)
    await asyncio.sleep(1.0)  # room for a wrong second submission to land
    for account in accounts:
        logs = contract.events.ReadingRecorded().get_logs(from_block=deployment.block,
                                                          argument_filters={"meter": account.address})
        assert sorted(unpack_record(int(e.args.record))["seq"] for e in logs) == list(range(1, count + 1))
    # The supervisor started the killed worker again.
    for _ in range(200):
        if victim in pool.pids() and pool.pids()[victim] != pid:
            break
        await asyncio.sleep(0.1)
    assert pool.pids()[victim] != pid
    for _ in range(100):
        if pool.listening() == 2:
            break
        await asyncio.sleep(0.1)
    gateway = (await pool_server.health.report()).parts.gateway
    assert gateway is not None and (gateway.state.value, gateway.workers_up) == ("up", 2)


async def test_python_m_server_with_workers_serves_and_stops_them_on_ctrl_c(server_settings, new_meter, link_for,
                                                                              tmp_path):
    proc = ServerProcess(server_settings.replace(gateway_workers=2), tmp_path / "server.log")
    await proc.start()
    for _ in range(600):  # ServerProcess returns at the first worker's gateway_listening
        if "gateway_workers_listening" in proc.log_path.read_text():
            break
        await asyncio.sleep(0.1)
    pids = [int(p) for p in re.findall(r"gateway_worker_started .*?pid=(\d+)", proc.log_path.read_text())]
    assert len(pids) == 2
    account = new_meter()
    link = link_for(account)
    await link.connect()
    await link.send_reading(ReadingData(account.address, 1, int(time.time()) - 20, 10_100))
    assert (await next_of(link, Bill)).seq == 1
    assert proc.interrupt() == 0
    log = proc.log_path.read_text()
    assert log.count("gateway_worker_stopped") == 2 and "server_stopped" in log
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_workers_refuse_a_port_another_servers_workers_listen_on(server_settings, deployment):
    # Another server's workers would share the port (SO_REUSEPORT, same user) and take some of the meters.
    with socket.create_server(("127.0.0.1", server_settings.server_port), reuse_port=True):
        with pytest.raises(OSError) as refused:
            await ServerApp.start(server_settings.replace(gateway_workers=2), deployment)
    assert refused.value.errno == errno.EADDRINUSE
