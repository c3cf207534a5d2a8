"""The meter client against a real server and chain: store-and-forward through outages and
kills, nothing lost or duplicated on chain, plain-worded errors, CSV replay."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time

import pytest
from eth_account import Account
from rich.console import Console

from common.billing import Billing
from common.chain import ChainClient
from common.deployment import load_deployment
from common.devchain import free_port
from common.eip712 import ReadingData
from common.events import unpack_record
from common.messages import ErrorMessage
from common.settings import GANACHE_DEV_KEYS, ROOT
from common.tls import client_context
from meters.client import MeterClient
from meters.csv_source import CsvSource
from meters.display import render_meter
from meters.identity import MeterIdentity, meter_dir
from meters.link import MeterLink
from meters.load_model import LoadModel
from meters.outbox import MeterPosition, Outbox
from meters.pacer import Pacer
from meters.schedule import IntervalSchedule
from meters.sources import CsvReplaySource, ModelSource
from meters.status import LinkState, MeterStatus
from operations.control import Operations
from operations.provisioning import provision
from server.app import ServerApp
from server.endpoint.tls import ensure_tls
from tests.support import ServerProcess

#: A meter's log line for a reading the gateway refused for what it says (not for when it was sent).
CONTENT_REFUSAL = re.compile(r"event=server_error .*?code=(implausible_delta|stale_timestamp|future_timestamp|"
                             r"register_decreased|out_of_range) seq=(\d+)")


def recorded_seqs(settings, address: str) -> list[int]:
    deployment = load_deployment(settings)
    contract = ChainClient(settings).contract(deployment)
    logs = contract.events.ReadingRecorded().get_logs(from_block=deployment.block,
                                                      argument_filters={"meter": address})
    return [unpack_record(int(e.args.record))["seq"] for e in logs]


def make_client(settings, name: str, source=None, time_scale: float = 30.0) -> tuple[MeterClient, Outbox]:
    directory = meter_dir(settings.data_dir, name)
    identity = MeterIdentity.load(directory)
    outbox = Outbox(directory / "outbox.sqlite", identity.address)
    pos = outbox.position()
    if source is None:
        # Five times the household's demand: bills move visibly, and even its evening peak stays under the supply's
        # 24 kW limit (at twenty times it did not, and evening runs saw readings refused for their content).
        source = ModelSource(LoadModel(identity.archetype, identity.seed, 5.0), pos.last_timestamp, pos.last_energy_wh)
    tls = ensure_tls(settings.data_dir / "tls")
    client = MeterClient(
        key=identity.key(directory), domain=load_deployment(settings).domain, url=settings.server_url,
        ssl_context=client_context(tls.ca_cert), outbox=outbox, source=source,
        schedule=IntervalSchedule(15, 15, time_scale), status=MeterStatus(name=name, meter=identity.address),
        time_scale=time_scale,
    )
    return client, outbox


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_meter_keeps_readings_while_server_is_down_then_delivers_them_all(meter_settings, deployment):
    provision(meter_settings, count=1, history_days=1)
    client, outbox = make_client(meter_settings, "meter-01")
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    await wait_for(lambda: outbox.count() >= 3 and "cannot connect to" in client.status.last_error, 30,
                   "readings to pile up while the server is down")
    console = Console(record=True, width=160)
    console.print(render_meter(client.status))
    screen = console.export_text()
    assert f"cannot connect to {meter_settings.server_url}: connection refused; retrying in" in screen
    assert re.search(r"retrying in \d+ s; \d+ readings? waiting", screen)
    assert client.status.state is LinkState.DISCONNECTED

    app = await ServerApp.start(meter_settings, deployment)
    try:
        await wait_for(lambda: client.status.state is LinkState.CONNECTED and outbox.count() == 0, 60,
                       "the backlog to be billed")
        stop.set()
        await task
    finally:
        await app.stop()
    last = outbox.position().last_seq
    seqs = recorded_seqs(meter_settings, client.status.meter)
    assert seqs == list(range(1, last + 1)), "every reading recorded once, in order"
    assert client.status.bills_received >= last - 48


async def test_killing_meter_and_server_at_awkward_moments_loses_and_duplicates_nothing(meter_settings, tmp_path):
    provision(meter_settings, count=1, history_days=1)
    server = ServerProcess(meter_settings, tmp_path / "server.log")
    await server.start()
    env = {**server.env(), "TIME_SCALE": "30", "READING_MIN_INTERVAL": "15", "READING_MAX_INTERVAL": "15"}
    meter_log = open(tmp_path / "meter.log", "ab")  # noqa: SIM115

    def start_meter() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "meters", "meter-01", "--plain", "--multiplier", "20"],
                                cwd=ROOT, env=env, stdout=meter_log, stderr=subprocess.STDOUT)

    meter = start_meter()
    await asyncio.sleep(4)
    meter.send_signal(signal.SIGKILL)  # mid-stream: readings may be signed, sent, unacknowledged
    meter.wait()
    meter = start_meter()
    await asyncio.sleep(3)
    server.kill()  # between ack and inclusion, with readings in flight
    await asyncio.sleep(3)  # the meter keeps reading into its outbox meanwhile
    await server.start()
    await asyncio.sleep(4)
    meter.send_signal(signal.SIGTERM)
    assert meter.wait(timeout=30) == 0
    await asyncio.sleep(2)  # let the last batch land
    assert server.interrupt() == 0
    identity = MeterIdentity.load(meter_dir(meter_settings.data_dir, "meter-01"))
    outbox = Outbox(meter_dir(meter_settings.data_dir, "meter-01") / "outbox.sqlite", identity.address)
    last = outbox.position().last_seq
    waiting = [e.seq for e in outbox.pending()]
    seqs = recorded_seqs(meter_settings, identity.address)
    assert len(seqs) == len(set(seqs)), "no reading recorded twice"
    assert last > 48 + 10, "the meter produced readings throughout"
    # At 20 times a household's load a reading now and then implies more than the supply's 24 kW
    # and is refused for its content: the meter logs it and moves on. Nothing else may be missing.
    refused = {int(m.group(2)) for m in re.finditer(CONTENT_REFUSAL, (tmp_path / "meter.log").read_text())}
    assert not refused & set(seqs), "a refused reading reached the chain"
    assert sorted(set(seqs) | set(waiting) | refused) == list(range(1, last + 1)), (
        "every reading is on chain, still waiting, or refused for its content")
    assert max(set(seqs) | refused) >= last - len(waiting)  # (the last reading may be one refused for its content)
    billing = Billing(ChainClient(meter_settings), load_deployment(meter_settings))
    assert billing.meter(identity.address).last_seq == max(seqs)


async def test_csv_replay_puts_the_recorded_consumption_on_chain(meter_settings, deployment, tmp_path):
    provision(meter_settings, count=1, history_days=0)
    csv_path = tmp_path / "sensor.csv"
    start = 1_700_000_000
    csv_path.write_text("timestamp,kwh\n" + "".join(f"{start + i},0.002\n" for i in range(120)))
    identity = MeterIdentity.load(meter_dir(meter_settings.data_dir, "meter-01"))
    outbox = Outbox(meter_dir(meter_settings.data_dir, "meter-01") / "outbox.sqlite", identity.address)
    opening = outbox.position().last_energy_wh
    outbox.close()
    t0 = time.time()
    source = CsvReplaySource(CsvSource(csv_path), t0, opening)
    client, outbox = make_client(meter_settings, "meter-01", source=source)
    app = await ServerApp.start(meter_settings, deployment)
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    try:
        await wait_for(lambda: client.status.bills_received >= 4, 30, "bills for replayed readings")
    finally:
        stop.set()
        await task
        await app.stop()
    billing = Billing(ChainClient(meter_settings), deployment)
    state = billing.meter(identity.address)
    elapsed = state.last_timestamp - int(t0)
    # 2 Wh a second from the file: the register follows the replayed rows, whole Wh, never ahead of time.
    assert 0 < state.last_energy_wh - opening <= 2 * (elapsed + 1)
    assert (state.last_energy_wh - opening) % 2 == 0


@pytest.mark.parametrize("name", ["meter-01"])
def test_meter_refuses_a_key_file_others_can_read(meter_settings, deployment, name):
    provision(meter_settings, count=1, history_days=0)
    directory = meter_dir(meter_settings.data_dir, name)
    os.chmod(directory / "key.hex", 0o644)
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="chmod 600"):
        MeterIdentity.load(directory).key(directory)


def test_reduce_usage_alert_lowers_the_load_until_it_is_cleared(meter_settings, deployment):
    from common.messages import GridAlertMessage
    from meters.client import DEMAND_RESPONSE_FACTOR

    provision(meter_settings, count=1, history_days=0)
    client, _ = make_client(meter_settings, "meter-01")
    model = client.source.model
    before = model.energy_wh(1_700_000_000, 1_700_003_600)
    client._on_message(GridAlertMessage(id=9, active=True, severity=1, kind="reduce_usage", region="north",
                                        message="Please reduce usage", expires_at=int(time.time()) + 600))
    assert model.demand_factor == DEMAND_RESPONSE_FACTOR == client.status.demand_factor
    assert model.energy_wh(1_700_000_000, 1_700_003_600) == pytest.approx(before * DEMAND_RESPONSE_FACTOR)
    client._on_message(GridAlertMessage(id=9, active=False))
    assert model.demand_factor == 1.0


async def test_a_meter_that_lost_track_of_a_used_up_seq_numbers_its_next_reading_after_it(meter_settings, deployment,
                                                                                         caplog):
    provision(meter_settings, count=1, history_days=0)
    directory = meter_dir(meter_settings.data_dir, "meter-01")
    identity = MeterIdentity.load(directory)
    outbox = Outbox(directory / "outbox.sqlite", identity.address)
    start = outbox.position()
    # The meter's data is restored from a moment ago: it last read now, at the seq the chain has.
    outbox.set_position(MeterPosition(start.last_seq, int(time.time()), start.last_energy_wh))
    outbox.close()
    app = await ServerApp.start(meter_settings, deployment)
    try:
        # Meanwhile the meter had sent one more reading, which the gateway refused for its content.
        link = MeterLink(meter_settings.server_url, client_context(meter_settings.ca_cert_path),
                         identity.key(directory), deployment.domain)
        await link.connect()
        await link.send_reading(ReadingData(identity.address, start.last_seq + 1, int(time.time()) + 3_600,
                                            start.last_energy_wh + 5))
        while not isinstance(refused := await link.recv(timeout=20), ErrorMessage):
            pass
        assert (refused.code, refused.seq) == ("future_timestamp", start.last_seq + 1)
        await link.close()

        client, outbox = make_client(meter_settings, "meter-01", time_scale=5.0)  # first reading in 3 s
        stop = asyncio.Event()
        with caplog.at_level(logging.INFO, logger="meter"):
            task = asyncio.create_task(client.run(stop))
            await wait_for(lambda: client.status.bills_received >= 1, 30, "the first bill")
            stop.set()
            await task
    finally:
        await app.stop()
    fields = [getattr(r, "fields", {}) for r in caplog.records]
    assert [f for f in fields if f.get("code") == "stale_sequence"] == [], "a reading was numbered with a used seq"
    assert any(f.get("event") == "sequence_adopted_from_server" and f.get("last_used_seq") == start.last_seq + 1
               for f in fields)
    assert recorded_seqs(meter_settings, identity.address)[0] == start.last_seq + 2


class _SteadySource:
    """A register that rises 10 Wh a second."""

    def register_at(self, t: float) -> int:
        return 1_000_000 + int(t % 1_000) * 10

    def export_at(self, t: float) -> int:
        return 0

    def restart(self, t: float, wh: int, export_wh: int = 0) -> None:
        pass


def test_a_provisional_bill_is_shown_as_such_and_the_reading_stays_until_its_final_bill(tmp_path):
    from eth_account import Account

    from common.eip712 import Domain
    from common.messages import Bill, TariffInfo

    account = Account.create()
    outbox = Outbox(tmp_path / "outbox.sqlite", account.address)
    outbox.set_position(MeterPosition(0, int(time.time()) - 60, 1_000_000))
    client = MeterClient(key=account.key, domain=Domain(1337, "0x" + "12" * 20), url="wss://127.0.0.1:1",
                         ssl_context=ssl.create_default_context(),
                         outbox=outbox, source=_SteadySource(), schedule=IntervalSchedule(15, 15, 1.0),
                         status=MeterStatus(name="meter-x", meter=account.address))
    reading = client.take_reading(time.time())
    assert reading is not None and outbox.count() == 1

    def bill(final: bool | None) -> Bill:
        return Bill(meter=account.address, seq=reading.seq, tx_hash="0x" + "ab" * 32, block=9,
                    energy_wh=reading.energy_wh, period_energy_wh=12, amount_due=345,
                    tariff=TariffInfo(unit_rate=24_670, standing_charge=57_210), final=final)

    client._on_message(bill(False))
    assert outbox.count() == 1, "a provisional bill must not drop the reading: its block may be replaced"
    assert client.status.bill_seq == reading.seq and not client.status.bill_final
    console = Console(record=True, width=140)
    console.print(render_meter(client.status))
    assert "provisional" in console.export_text()
    client._on_message(bill(True))
    assert outbox.count() == 0 and client.status.bill_final
    console = Console(record=True, width=140)
    console.print(render_meter(client.status))
    assert "provisional" not in console.export_text()
    # A server that predates version 3 sends final bills only, without the field.
    second = client.take_reading(time.time() + 20)
    assert second is not None and outbox.count() == 1
    client._on_message(bill(None).model_copy(update={"seq": second.seq}))
    assert outbox.count() == 0
    outbox.close()


async def test_a_meter_fails_over_between_two_gateways_on_one_contract_losing_and_duplicating_nothing(
        meter_settings, deployment, tmp_path):
    provision(meter_settings, count=1, history_days=0)
    ops = Operations(meter_settings)
    second_key = GANACHE_DEV_KEYS[9]
    ops.set_gateway(Account.from_key(second_key).address, True)
    # The second gateway: its own key, queue and ports; its server certificate from the same CA.
    b_settings = meter_settings.replace(data_dir=tmp_path / "b", server_port=free_port(), http_port=free_port(),
                                        gateway_key=second_key)
    ensure_tls(meter_settings.data_dir / "tls")
    (tmp_path / "b" / "tls").mkdir(parents=True)
    for name in ("ca.pem", "ca.key"):
        shutil.copy2(meter_settings.data_dir / "tls" / name, tmp_path / "b" / "tls" / name)
    a, b = ServerProcess(meter_settings, tmp_path / "a.log"), ServerProcess(b_settings, tmp_path / "b.log")
    await a.start()
    await b.start()
    client, outbox = make_client(meter_settings, "meter-01")
    client.urls = [meter_settings.server_url, b_settings.server_url]
    client.url = client.urls[0]
    stop = asyncio.Event()
    task = asyncio.create_task(client.run(stop))
    node = ChainClient(meter_settings).w3.provider
    try:
        await wait_for(lambda: client.status.bills_received >= 3, 30, "bills through the first gateway")
        # Blocks stop: the first gateway acknowledges readings and sends them in a transaction left pending.
        node.make_request("miner_stop", [])
        await wait_for(lambda: outbox.count() >= 3, 30, "readings acknowledged but not yet mined")
        a.kill()
        await wait_for(lambda: client.url == b_settings.server_url and client._synced, 30,
                       "the meter to move to the second gateway and resend what has no bill")
        await asyncio.sleep(1)  # the second gateway sends the same readings in its own transaction
        node.make_request("miner_start", [])
        moved_at = client.status.bills_received
        await wait_for(lambda: client.status.bills_received >= moved_at + 4, 30, "bills through the second gateway")
        await a.start()  # the first gateway sends what its queue held: the contract's sequence rule refuses copies
        await asyncio.sleep(3)
        stop.set()
        await task
    finally:
        node.make_request("miner_start", [])
        stop.set()
        assert a.interrupt() == 0 and b.interrupt() == 0
        ops.set_gateway(Account.from_key(second_key).address, False)
    seqs = recorded_seqs(meter_settings, client.status.meter)
    waiting = [e.seq for e in outbox.pending()]
    last = outbox.position().last_seq
    assert len(seqs) == len(set(seqs)), "no reading recorded twice"
    assert sorted(set(seqs) | set(waiting)) == list(range(1, last + 1)), "every reading on chain or still waiting"
    assert "event=batch_mined" in (tmp_path / "b.log").read_text(), "the second gateway submitted readings"
    contract = ChainClient(meter_settings).contract(deployment)
    refused = contract.events.ReadingRejected().get_logs(from_block=deployment.block,
                                                          argument_filters={"meter": client.status.meter})
    assert refused and {int(e.args.seq) for e in refused} <= set(seqs), (
        "both gateways sent the same readings; the contract recorded each once and refused the copies")
    assert not ops.billing.is_gateway(Account.from_key(second_key).address)


async def test_a_meter_with_100_readings_waiting_resends_them_all_on_one_connection_paced_to_the_limit(
        meter_settings, deployment, caplog):
    # The gateway's shipped limit: 5 messages a second, bursts of 20. The meter took its last reading
    # (--stop-after) while the server was away, so only resending delivers the backlog.
    assert (meter_settings.rate_limit_per_second, meter_settings.rate_limit_burst) == (5.0, 20)
    provision(meter_settings, count=1, history_days=0)
    client, outbox = make_client(meter_settings, "meter-01", source=_SteadySource())
    start = outbox.position()
    for i in range(1, 101):
        assert client.take_reading(start.last_timestamp + i) is not None
    client.stop_after = 100
    assert outbox.count() == 100
    app = await ServerApp.start(meter_settings, deployment)
    stop = asyncio.Event()
    try:
        with caplog.at_level(logging.INFO):
            began = time.monotonic()
            task = asyncio.create_task(client.run(stop))
            await asyncio.wait_for(client.finished.wait(), 180)
            took = time.monotonic() - began
            stop.set()
            await task
    finally:
        await app.stop()
    fields = [getattr(r, "fields", {}) for r in caplog.records]
    events = [f.get("event") for f in fields]
    wanted = list(range(start.last_seq + 1, start.last_seq + 101))
    assert events.count("logged_in") == 1 and "communication_problem" not in events, "the meter reconnected"
    assert "flood_disconnected" not in events
    assert [f for f in fields if f.get("event") == "server_error"] == [], "a reading was refused or dropped"
    assert "resending_unacknowledged" not in events, "a reading went unacknowledged"
    assert client._acked >= set(wanted), "every reading acknowledged on the one connection"
    assert recorded_seqs(meter_settings, client.status.meter) == wanted
    assert outbox.count() == 0
    print(f"\n100 readings resent and billed final in {took:.1f} s on one connection")


async def test_a_meter_that_took_its_last_reading_resends_what_the_gateway_dropped_without_reconnecting(
        meter_settings, deployment, monkeypatch, caplog):
    # A meter that misjudges the limit (twice the gateway's burst): the gateway drops part of its backlog.
    monkeypatch.setattr(Pacer, "for_limit", classmethod(lambda cls, limit: cls(4.5, 40)))
    provision(meter_settings, count=1, history_days=0)
    client, outbox = make_client(meter_settings, "meter-01", source=_SteadySource())
    start = outbox.position()
    for i in range(1, 61):
        assert client.take_reading(start.last_timestamp + i) is not None
    client.stop_after = 60  # it takes no more readings: nothing new would carry the resend along
    app = await ServerApp.start(meter_settings, deployment)
    stop = asyncio.Event()
    try:
        with caplog.at_level(logging.INFO):
            task = asyncio.create_task(client.run(stop))
            await asyncio.wait_for(client.finished.wait(), 180)
            stop.set()
            await task
    finally:
        await app.stop()
    fields = [getattr(r, "fields", {}) for r in caplog.records]
    events = [f.get("event") for f in fields]
    assert any(f.get("event") == "server_error" and f.get("code") == "rate_limited" for f in fields)
    assert "resending_unacknowledged" in events
    assert events.count("logged_in") == 1 and "flood_disconnected" not in events, "the meter reconnected"
    assert recorded_seqs(meter_settings, client.status.meter) == list(range(start.last_seq + 1, start.last_seq + 61))
