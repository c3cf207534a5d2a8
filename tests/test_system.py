"""The whole system end to end, on each node: real Ganache (automine) and real Anvil (a block a
second, two confirmations, so bills are provisional before they are final), deployment,
provisioning, the server, the grid-alert emitter and twelve meter processes with accelerated
intervals; the server is killed and restarted mid-run."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import httpx
import pytest

from common.billing import Billing
from common.chain import ChainClient
from common.deployment import load_deployment
from common.devchain import free_port
from common.events import unpack_record
from common.settings import ROOT, Settings
from meters.identity import MeterIdentity, list_meters, meter_dir
from meters.outbox import Outbox
from meters.status import MeterStatus
from operations.provisioning import provision
from tests.support import ServerProcess

METERS = 12
#: Readings per meter on each node, and when the server is killed (seconds after the meters start): Anvil's
#: blocks come once a second, so its run is kept short.
RUNS = {"ganache": (14, 6.0), "anvil": (6, 3.0)}

pytestmark = pytest.mark.slow


def _read(path) -> str:
    return path.read_text() if path.exists() else ""


def write_scenario(path) -> None:
    """One alert for every region a few seconds in, lasting past the end of the test."""
    path.write_text(json.dumps({"steps": [
        {"after_s": 0, "kind": "frequency_dip", "severity": 2, "region": "",
         "message": "Grid frequency dip: please avoid heavy appliances for 10 minutes", "duration_s": 600},
    ]}))


async def check_api_matches_chain(settings, readings_each: int) -> None:
    """The REST API, after the server was killed and restarted, agrees with the chain for every meter,
    and a customer's key reads only its own meter."""
    billing = Billing(ChainClient(settings), load_deployment(settings))
    operator = {"X-API-Key": (settings.data_dir / "api" / "operator.key").read_text().strip()}
    customers = json.loads((settings.data_dir / "customers.json").read_text())["customers"]
    async with httpx.AsyncClient(base_url=settings.http_url + "/api/v1", headers=operator, timeout=20) as api:
        deadline = time.monotonic() + 30
        while True:
            listed = {m["address"]: m for m in (await api.get("/meters")).json()}
            if all(listed[c["meter"]]["last_reading"]["seq"] == readings_each
                   and listed[c["meter"]]["open_bill"]["final"] for c in customers):
                break
            assert time.monotonic() < deadline, "the index did not catch up with the chain"
            await asyncio.sleep(0.5)
        for customer in customers:
            shown, address = listed[customer["meter"]], customer["meter"]
            bill, view = billing.bill(address), billing.meter(address)
            assert shown["open_bill"]["amount_due_micropence"] == bill.amount_due
            assert shown["open_bill"]["energy_wh"] == bill.period_energy_wh
            assert shown["last_reading"]["register_wh"] == view.last_energy_wh
            readings = (await api.get(f"/meters/{address}/readings", params={"page_size": 1})).json()
            assert readings["count"] == readings_each and readings["results"][0]["seq"] == readings_each
        own, other = customers[0], customers[1]
        mine = await api.get(f"/meters/{own['meter']}", headers={"X-API-Key": own["api_key"]})
        theirs = await api.get(f"/meters/{other['meter']}", headers={"X-API-Key": own["api_key"]})
        assert mine.status_code == 200 and theirs.status_code == 403


@pytest.fixture(params=list(RUNS))
def node(request: pytest.FixtureRequest) -> tuple[str, Settings]:
    """Each node in turn: its settings, with the contract deployed on it."""
    if request.param == "ganache":
        request.getfixturevalue("deployment")
        return "ganache", request.getfixturevalue("base_settings")
    request.getfixturevalue("anvil_deployment")
    return "anvil", request.getfixturevalue("anvil_settings")


async def test_twelve_meters_get_bills_and_an_alert_through_a_server_crash(node, tmp_path):
    kind, base_settings = node
    readings_each, kill_after = RUNS[kind]
    settings = base_settings.replace(data_dir=tmp_path / "data", server_port=free_port(), http_port=free_port(),
                                     batch_max_wait=0.05)
    provision(settings, count=METERS, history_days=0)
    server = ServerProcess(settings, tmp_path / "server.log")
    await server.start()
    env = {**server.env(), "TIME_SCALE": "15", "READING_MIN_INTERVAL": "15", "READING_MAX_INTERVAL": "15"}
    scenario = tmp_path / "scenario.json"
    write_scenario(scenario)
    emitter = subprocess.Popen(
        [sys.executable, "scripts/grid_alert_emitter.py", "--scenario", str(scenario), "--once",
         "--log-file", str(tmp_path / "emitter.log")],
        cwd=ROOT, env=env, stdout=open(tmp_path / "emitter.out", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    names = list_meters(settings.data_dir)
    assert len(names) == METERS
    solar = [n for n in names if MeterIdentity.load(meter_dir(settings.data_dir, n)).solar_kwp >= 3]
    assert len(solar) >= 3, "the fleet has at least three exporting households"
    # The alert is raised before the meters start; those connected get it live, later ones on login.
    deadline = time.monotonic() + 120
    while "event=grid_alert_raised" not in _read(tmp_path / "emitter.log"):
        assert time.monotonic() < deadline and emitter.poll() is None, _read(tmp_path / "emitter.out")[-2000:]
        await asyncio.sleep(0.2)
    meters = {
        name: subprocess.Popen(
            [sys.executable, "-m", "meters", name, "--plain", "--stop-after", str(readings_each)],
            cwd=ROOT, env=env, stdout=open(tmp_path / f"{name}.out", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        for name in names
    }
    try:
        await asyncio.sleep(kill_after)
        server.kill()  # mid-run, with readings queued and in flight
        await asyncio.sleep(3)
        await server.start()
        deadline = time.monotonic() + 150
        for name, proc in meters.items():
            while proc.poll() is None:
                assert time.monotonic() < deadline, f"{name} did not finish; see {tmp_path}/{name}.out"
                await asyncio.sleep(0.5)
            assert proc.returncode == 0, (tmp_path / f"{name}.out").read_text()[-2000:]
        await check_api_matches_chain(settings, readings_each)
    finally:
        for proc in meters.values():
            if proc.poll() is None:
                proc.kill()
        emitter.send_signal(signal.SIGINT)
        emitter.wait(timeout=60)
        server.interrupt()

    billing = Billing(ChainClient(settings), load_deployment(settings))
    raised = [line for line in _read(tmp_path / "emitter.log").splitlines() if "event=grid_alert_raised" in line]
    alert_id = raised[0].split(" id=")[1].split()[0]
    for name in names:
        directory = meter_dir(settings.data_dir, name)
        identity = MeterIdentity.load(directory)
        status = MeterStatus.from_json((directory / "status.json").read_text())
        outbox = Outbox(directory / "outbox.sqlite", identity.address)
        assert outbox.count() == 0 and outbox.position().last_seq == readings_each
        on_chain = billing.meter(identity.address)
        assert on_chain.last_seq == readings_each, f"{name}: a reading was lost"
        assert status.bills_received >= 3, f"{name} received only {status.bills_received} bills"
        assert status.bill_final, f"{name} ended on a provisional bill"
        assert status.bill_seq == on_chain.last_seq
        assert status.amount_due == billing.bill(identity.address).amount_due, f"{name}: shown bill differs"
        assert status.register_wh == on_chain.last_energy_wh
        assert status.export_register_wh == on_chain.last_export_wh
        contract = billing.contract
        seqs = [unpack_record(int(e.args.record))["seq"] for e in contract.events.ReadingRecorded().get_logs(
            from_block=billing.deployment.block, argument_filters={"meter": identity.address})]
        assert seqs == list(range(1, readings_each + 1)), f"{name}: recorded {seqs}"
        log = (directory / "meter.log").read_text()
        if kind == "anvil":  # blocks come once a second and turn final two later: bills were provisional first
            assert "final=False" in log and "final=True" in log, f"{name} saw no provisional bill"
        shown = {line.split(" id=")[1].split()[0] for line in log.splitlines() if "event=grid_alert " in line}
        assert alert_id in shown, f"{name} never showed the emitter's grid alert {alert_id}"

    # The independent check, as a customer would run it: one household's bill issued, then every bill of the
    # twelve recomputed from the chain's logs in JavaScript and held to the contract's figures.
    exporter = MeterIdentity.load(meter_dir(settings.data_dir, solar[0])).address
    billing.close_billing_period(exporter)
    addresses = [MeterIdentity.load(meter_dir(settings.data_dir, n)).address for n in names]
    deployment_file = settings.deployments_dir / f"{billing.deployment.chain_id}.json"
    check = subprocess.run(
        ["node", "tools/verify/check.mjs", "--rpc", settings.chain_rpc_url, "--deployment", str(deployment_file),
         *(arg for a in addresses for arg in ("--meter", a))],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    rows = check.stdout.splitlines()[1:-1]
    assert len(rows) == METERS and all(row.endswith("agrees") for row in rows)
    assert next(r for r in rows if r.startswith(exporter)).split()[1:3] == [str(readings_each), "1"]
    assert check.stdout.splitlines()[-1].endswith("all agree with the contract")
