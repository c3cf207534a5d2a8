"""The whole system on several machines (network namespaces on one bridge): a 3-node NATS cluster, two stateless
gateways, two cores writing to one chain, and meters failing over between the gateways. A gateway's machine dies
and so does a NATS node while the meters stream; every acknowledged reading still reaches the chain exactly once,
and every meter ends with the bill the chain computes."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from common.devchain import GANACHE_BIN, ganache_flags
from common.settings import GANACHE_DEV_KEYS, Settings, load_settings
from server.endpoint.tls import ensure_tls
from tests.cluster.netns import Host, Network
from tests.cluster.test_netns_nats import CLIENT_PORT, network, start_node, wait_until_healthy

ROOT = Path(__file__).resolve().parents[2]
METERS, COUNT, INTERVAL = 30, 50, 0.5
CHAIN_PORT, METERS_PORT = 8545, 8765
#: The second core's key (granted the gateway role by the driver's setup).
SECOND_CORE_KEY = GANACHE_DEV_KEYS[6]
#: Seconds a server may take to start on a loaded machine.
SERVER_READY = 180.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
__all__ = ["network"]  # the fixture, imported for the tests here


def driver(command: str, *args: str) -> list[str]:
    """The driver script's command line."""
    return [sys.executable, "-m", "tests.cluster.system_driver", command, *args]


def env(settings: Settings) -> dict[str, str]:
    """A child's environment: exactly ``settings``."""
    return {**os.environ, **settings.as_env()}


def wait_for(host: Host, log: Path, ready: str) -> None:
    """Wait until ``log`` says ``ready`` (fail with the log if the host's processes all exit or it takes too long)."""
    deadline = time.monotonic() + SERVER_READY
    while ready not in (log.read_text(errors="replace") if log.exists() else ""):
        if all(p.poll() is not None for p in host.processes) or time.monotonic() > deadline:
            pytest.fail(f"{host.name} never said {ready}:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def acked_so_far(progress: Path) -> int:
    """The least count of acks across meters the driver wrote (0 before it wrote one)."""
    try:
        return int(progress.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def longest_gap_after(meters: dict[str, Any], fault: float) -> float:
    """Across meters: the longest wait between the last ack before ``fault`` and the first after it."""
    gaps = []
    for result in meters.values():
        times = [t for _, t in result["acks"]]
        before = [t for t in times if t <= fault]
        after = [t for t in times if t > fault]
        if before and after:
            gaps.append(min(after) - max(before))
    return max(gaps, default=0.0)


def test_a_gateway_and_a_nats_node_die_while_meters_stream_and_nothing_is_lost_or_doubled(
        network: Network, tmp_path: Path) -> None:
    nodes = {name: network.add_host(name) for name in ("n1", "n2", "n3")}
    writer, core2, gw1, gw2, field = (network.add_host(n) for n in ("writer", "core2", "gw1", "gw2", "meters"))
    logs = {name: start_node(host, [p for p in nodes.values() if p is not host], tmp_path)
            for name, host in nodes.items()}
    writer.spawn([str(GANACHE_BIN), *ganache_flags(CHAIN_PORT, str(tmp_path / "chain"), host=writer.address)],
                 log_path=tmp_path / "ganache.log")
    formed = wait_until_healthy(logs, nodes)

    base = load_settings(env_file=tmp_path / "no.env", chain_rpc_url=f"http://{writer.address}:{CHAIN_PORT}",
                         chain_ws_url=f"ws://{writer.address}:{CHAIN_PORT}", deployments_dir=tmp_path / "deployments",
                         data_dir=tmp_path / "setup", confirmations=0, batch_max_wait=0.05, http_port=0,
                         bus_url=",".join(f"nats://{h.address}:{CLIENT_PORT}" for h in nodes.values()),
                         bus_partitions=8, bus_replicas=3, tls_hosts=f"{gw1.address},{gw2.address}")
    keys = tmp_path / "keys.json"
    done = writer.run(driver("setup", "--meters", str(METERS), "--second-key", SECOND_CORE_KEY, "--output", str(keys)),
                      timeout=300, env=env(base), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]

    ensure_tls(tmp_path / "tls", [gw1.address, gw2.address])
    for name in ("writer", "core2", "gw1", "gw2", "meters"):
        shutil.copytree(tmp_path / "tls", tmp_path / name / "tls")
    cores = {writer: base.replace(server_role="core", data_dir=tmp_path / "writer", server_host=writer.address),
             core2: base.replace(server_role="core", data_dir=tmp_path / "core2", server_host=core2.address,
                                 gateway_key=SECOND_CORE_KEY)}
    gateways = {gw: base.replace(server_role="gateway", data_dir=tmp_path / gw.name, server_host=gw.address,
                                 server_port=METERS_PORT) for gw in (gw1, gw2)}
    for host, settings in (cores | gateways).items():
        host.spawn([sys.executable, "-m", "server"], log_path=tmp_path / f"{host.name}.log", env=env(settings),
                   cwd=ROOT)
    for host in cores:
        wait_for(host, tmp_path / f"{host.name}.log", "server_started")
    for host in gateways:
        wait_for(host, tmp_path / f"{host.name}.log", "gateway_started")

    led = tmp_path / "leader.json"
    done = field.run(driver("leader", "--output", str(led)), timeout=120, env=env(base), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    leader = nodes[json.loads(led.read_text())["leader"]]  # the reading log's stream leader: the hard case

    progress, output = tmp_path / "progress", tmp_path / "meters.json"
    urls = ",".join(s.server_url for s in gateways.values())
    meters = field.spawn(driver("meters", "--keys", str(keys), "--urls", urls, "--count", str(COUNT), "--interval",
                                str(INTERVAL), "--progress", str(progress), "--output", str(output)),
                         log_path=tmp_path / "meters.log", env=env(base.replace(data_dir=tmp_path / "meters")),
                         cwd=ROOT)
    began = time.monotonic()
    faults: list[tuple[str, float]] = []
    for share, victim in ((4, gw1), (2, leader)):
        while acked_so_far(progress) < COUNT // share:
            assert meters.poll() is None, (tmp_path / "meters.log").read_text()[-3000:]
            assert time.monotonic() - began < 200, f"the meters acknowledged too little to kill {victim.name}"
            time.sleep(0.1)
        faults.append((victim.name, time.time()))
        assert victim.kill_all() and victim.pids() == []
    assert meters.wait(timeout=240) == 0, (tmp_path / "meters.log").read_text()[-3000:]
    streamed = time.monotonic() - began
    told: dict[str, Any] = json.loads(output.read_text())

    chain_view = tmp_path / "chain.json"
    done = writer.run(driver("check", "--keys", str(keys), "--count", str(COUNT), "--output", str(chain_view)),
                      timeout=240, env=env(base), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    recorded: dict[str, Any] = json.loads(chain_view.read_text())

    acked = sum(len(m["acks"]) for m in told.values())
    lost = {a: sorted({s for s, _ in m["acks"]} - set(recorded[a]["seqs"])) for a, m in told.items()}
    duplicated = {a: len(r["seqs"]) - len(set(r["seqs"])) for a, r in recorded.items()}
    gaps = {name: longest_gap_after(told, at) for name, at in faults}
    named = {gw1.name: "gw1 (a gateway host)", leader.name: f"{leader.name} (the stream leader's NATS node)"}
    print(f"cluster system figures: {METERS} meters x {COUNT} readings every {INTERVAL} s; NATS formed in "
          f"{formed:.1f} s; streamed in {streamed:.1f} s; {acked} acks, "
          f"{sum(len(r['seqs']) for r in recorded.values())} readings on chain; faults: "
          + ", ".join(f"{named[name]} killed (longest gap in acks after it {gaps[name]:.1f} s)" for name, _ in faults)
          + f"; meter failovers {sum(m['failovers'] for m in told.values())}; "
          f"lost {sum(map(len, lost.values()))}, duplicated {sum(duplicated.values())}")
    assert all(not seqs for seqs in lost.values()), lost
    assert all(n == 0 for n in duplicated.values()), duplicated
    for address, result in recorded.items():
        last_acked = max(s for s, _ in told[address]["acks"])
        assert sorted(result["seqs"]) == list(range(1, COUNT + 1)) and last_acked <= COUNT, (address, last_acked)
        bill = told[address]["bill"]
        state, open_bill = result["state"], result["bill"]
        assert bill is not None and bill["seq"] == state[4] == COUNT, (address, bill, state)
        assert (bill["energy_wh"], bill["period_energy_wh"], bill["energy_cost"], bill["standing_charge"],
                bill["amount_due"]) == (state[6], open_bill[3], open_bill[5], open_bill[7], int(open_bill[8])), \
            (address, bill, open_bill)
