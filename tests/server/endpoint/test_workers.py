"""Gateway processes (``GATEWAY_WORKERS`` > 1): independent stateless gateways on the bus, with the server's main
process a core on it (and, without ``BUS_URL``, the local nats-server it started). Meters on every process get their
bills and alerts; a process killed mid-stream loses nothing it acknowledged and records nothing twice."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from common.eip712 import ReadingData
from common.errors import ConfigError
from common.events import unpack_record
from common.messages import Ack, Bill, GridAlertMessage
from server.app import ServerApp
from server.bus.hub import Hub
from server.endpoint.workers import WorkerPool, start_local_bus
from tests.server.endpoint.test_gateway import next_of
from tests.support import ServerProcess


@pytest.fixture
async def pool_server(server_settings, deployment) -> AsyncIterator[ServerApp]:
    """A server whose meters' endpoint runs in two gateway processes, on a nats-server it started."""
    app = await ServerApp.start(server_settings.replace(gateway_workers=2), deployment)
    await app.relay.caught_up.wait()
    yield app
    await app.stop()


def pool_of(app: ServerApp) -> WorkerPool:
    assert isinstance(app.gateway, WorkerPool)
    return app.gateway


def _established_on(port: int) -> dict[int, int]:
    """Socket inode -> the peer's port, for every established TCP connection to local ``port``."""
    held = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                held[inode] = int(remote.rsplit(":", 1)[1], 16)
    return held


def meters_by_worker(pool: WorkerPool) -> dict[int, int]:
    """Worker number -> how many meters' connections its process holds (its sockets on the meters' port)."""
    established = _established_on(pool.settings.server_port)
    counts = {}
    for number, pid in pool.pids().items():
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
        counts[number] = len(inodes & established.keys())
    return counts


async def on_both_workers(app: ServerApp, new_meter, link_for, most: int = 24) -> list:
    """Connect meters until each gateway process holds at least one; (account, link) pairs."""
    pool = pool_of(app)
    connected = []
    for _ in range(most):
        account = new_meter()
        link = link_for(account)
        await link.connect()
        connected.append((account, link))
        if len(connected) >= 2 and all(meters_by_worker(pool).values()):
            return connected
    raise AssertionError(f"the kernel put {most} connections on one process: {meters_by_worker(pool)}")


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
    assert sum(meters_by_worker(pool_of(pool_server)).values()) == len(meters)
    gateway = (await pool_server.health.report()).parts.gateway
    assert gateway is not None and gateway.state.value == "up"
    assert (gateway.workers, gateway.workers_up, gateway.meters_connected) == (2, 2, len(meters))
    for _, link in meters:
        await link.close()


async def stream_readings(account, link_for, count: int, acked: set[int], start: float, *, ack_timeout: float = 20.0,
                          pause: float = 0.02, ack_timeout_reconnects: bool = False) -> int:
    """Send readings 1..count, each after the previous one's ack; reconnect and go on from the server's
    ``lastUsedSeq`` when the connection drops (or, with ``ack_timeout_reconnects``, when an ack does not come within
    ``ack_timeout``: a core gone quiet on the bus). Returns how many times it reconnected."""
    dropped: tuple[type[BaseException], ...] = (ConnectionClosed, OSError)
    if ack_timeout_reconnects:
        dropped += (asyncio.TimeoutError,)
    link = link_for(account)
    welcome = await link.connect()
    reconnects = 0
    seq = welcome.last_used_seq + 1
    while seq <= count:
        try:
            await link.send_reading(ReadingData(account.address, seq, int(start) + seq * 10, 10_000 + seq * 10))
            ack = await next_of(link, Ack, timeout=ack_timeout)
            assert ack.seq == seq and ack.status in ("queued", "duplicate")
            acked.add(seq)
            seq += 1
            await asyncio.sleep(pause)
        except dropped:
            reconnects += 1
            assert reconnects < 20
            for _ in range(100):
                try:
                    link = link_for(account)
                    welcome = await link.connect()
                    break
                except (ConnectionClosed, OSError, asyncio.TimeoutError):
                    await asyncio.sleep(0.3)
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
    streams = asyncio.gather(*(stream_readings(a, link_for, count, acked[a.address], start) for a in accounts))
    while min(len(s) for s in acked.values()) < 10:
        assert not streams.done(), streams.exception()
        await asyncio.sleep(0.05)
    # The streams' connections are new ones, which the kernel spreads over the workers as it likes: kill a worker
    # that holds some of them now (the first one could hold none, and the test would see no reconnect).
    victim = next(number for number, held in meters_by_worker(pool).items() if held)
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
    # A reading the killed process logged but whose ack it did not get out is not resent (``welcome`` says it is
    # used): it need not be acked, but it must be on chain like every acked one.
    assert all(acked[a.address] <= set(range(1, count + 1)) and count - len(acked[a.address]) <= 2 for a in accounts)
    contract = chain.w3.eth.contract(address=deployment.address, abi=deployment.abi)
    deadline = time.monotonic() + 60
    while any(contract.functions.meterState(a.address).call()[4] < count for a in accounts):
        assert time.monotonic() < deadline, ("the readings never all reached the chain: last seq on chain "
                                             f"{[contract.functions.meterState(a.address).call()[4] for a in accounts]}"
                                             f", queued {pool_server.store.count()}")
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
    assert log.index("gateway_worker_stopped") < log.index("nats_stopped") < log.index("server_stopped")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # The nats-server it started (store under DATA_DIR/nats/) was stopped too.
    nats_port = int(re.search(r"nats_started .*?url=nats://127\.0\.0\.1:(\d+)", log).group(1))
    assert (server_settings.data_dir / "nats" / "jetstream").is_dir()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", nats_port), timeout=2).close()


async def test_workers_refuse_a_port_another_servers_workers_listen_on(server_settings, deployment):
    # Another server's workers would share the port (SO_REUSEPORT, same user) and take some of the meters.
    with socket.create_server(("127.0.0.1", server_settings.server_port), reuse_port=True):
        with pytest.raises(OSError) as refused:
            await ServerApp.start(server_settings.replace(gateway_workers=2), deployment)
    assert refused.value.errno == errno.EADDRINUSE


async def test_a_gateway_process_that_cannot_listen_says_why(server_settings, deployment):
    nats = await start_local_bus(server_settings)
    try:
        pool = WorkerPool(server_settings.replace(gateway_workers=1, bus_url=nats.url), deployment, Hub())
        # A plain listener (no SO_REUSEPORT) on the port: the process's bind fails, and it says so.
        with socket.create_server(("127.0.0.1", server_settings.server_port)):
            with pytest.raises(ConfigError) as refused:
                await pool.keep(1)
        assert "gateway worker 1 could not start: cannot listen on" in refused.value.message
        assert "[Errno 98]" in refused.value.message and "address already in use" in refused.value.message
        assert pool.listening() == 0 and pool.pids() == {}
    finally:
        await nats.stop_async()


async def test_gateway_processes_use_the_bus_they_are_given_and_start_no_nats_server(server_settings, deployment):
    nats = await start_local_bus(server_settings.replace(data_dir=server_settings.data_dir / "elsewhere"))
    try:
        app = await ServerApp.start(server_settings.replace(gateway_workers=2, bus_url=nats.url), deployment)
        try:
            assert app.nats is None and app.settings.bus_url == nats.url
            assert pool_of(app).listening() == 2
            assert not (server_settings.data_dir / "nats").exists()
        finally:
            await app.stop()
    finally:
        await nats.stop_async()
