"""The meter client keeps its status file current for the fleet view: written on a heartbeat when
nothing changes, and its last problem cleared once it is connected and up to date again."""

from __future__ import annotations

import asyncio
import time

from common.deployment import load_deployment
from common.tls import client_context
from meters.client import MeterClient
from meters.identity import MeterIdentity, meter_dir
from meters.load_model import LoadModel
from meters.outbox import Outbox
from meters.schedule import IntervalSchedule
from meters.sources import ModelSource
from meters.status import LinkState, MeterStatus
from operations.provisioning import provision
from server.app import ServerApp
from server.endpoint.tls import ensure_tls


def status_client(settings, heartbeat: float, interval: float, stop_after: int | None = None
                  ) -> tuple[MeterClient, Outbox]:
    """A provisioned meter-01 writing its status.json, taking a reading every ``interval`` seconds."""
    directory = meter_dir(settings.data_dir, "meter-01")
    identity = MeterIdentity.load(directory)
    outbox = Outbox(directory / "outbox.sqlite", identity.address)
    pos = outbox.position()
    source = ModelSource(LoadModel(identity.archetype, identity.seed, 5.0), pos.last_timestamp, pos.last_energy_wh)
    tls = ensure_tls(settings.data_dir / "tls")
    client = MeterClient(
        key=identity.key(directory), domain=load_deployment(settings).domain, url=settings.server_url,
        ssl_context=client_context(tls.ca_cert), outbox=outbox, source=source,
        schedule=IntervalSchedule(interval, interval, 1.0), status=MeterStatus(name="meter-01", meter=identity.address),
        status_path=directory / "status.json", heartbeat=heartbeat, stop_after=stop_after,
    )
    return client, outbox


def written(settings) -> MeterStatus:
    return MeterStatus.from_json((meter_dir(settings.data_dir, "meter-01") / "status.json").read_text())


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_connected_meter_between_readings_writes_its_status_on_every_heartbeat(meter_settings, deployment):
    provision(meter_settings, count=1, history_days=0)
    client, outbox = status_client(meter_settings, heartbeat=0.3, interval=1.0, stop_after=1)
    app = await ServerApp.start(meter_settings, deployment)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    try:
        # One reading, billed; then nothing changes (no reading comes after it).
        await wait_for(lambda: client.status.state is LinkState.CONNECTED and client.status.bills_received >= 1
                       and outbox.count() == 0, 30, "the first reading to be billed")
        await asyncio.sleep(0.5)
        quiet = written(meter_settings)
        writes = []
        for _ in range(6):
            await asyncio.sleep(0.25)
            writes.append(written(meter_settings).updated_at)
        assert written(meter_settings).last_seq == quiet.last_seq, "no reading was taken meanwhile"
        assert len(set(writes)) >= 3, "the status was rewritten on the heartbeat with nothing changed"
        assert quiet.heartbeat_s == 0.3
        assert not written(meter_settings).stale(time.time())
    finally:
        stop.set()
        await task
        await app.stop()
    assert written(meter_settings).state is LinkState.STOPPED


async def test_the_last_problem_is_cleared_once_the_meter_is_connected_and_has_resent_its_backlog(
    meter_settings, deployment
):
    provision(meter_settings, count=1, history_days=0)
    client, outbox = status_client(meter_settings, heartbeat=10.0, interval=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    app = None
    try:
        await wait_for(lambda: outbox.count() >= 2 and client.status.last_error.startswith("cannot connect to"), 30,
                       "readings to wait while the server is down")
        assert client.status.state is LinkState.DISCONNECTED
        app = await ServerApp.start(meter_settings, deployment)
        await wait_for(lambda: client.status.state is LinkState.CONNECTED and client.status.last_event, 30,
                       "the meter to connect and resend")
        on_disk = written(meter_settings)
        assert on_disk.last_error == "" and on_disk.last_error_at == 0.0
        assert on_disk.last_event.startswith(f"connected to {meter_settings.server_url}; ")
        assert on_disk.last_event.endswith(" resent") and "reading(s)" not in on_disk.last_event
    finally:
        stop.set()
        await task
        if app is not None:
            await app.stop()
