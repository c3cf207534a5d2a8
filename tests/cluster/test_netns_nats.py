"""A 3-node NATS cluster on three machines (network namespaces) keeps every acknowledged message, once,
when the machine of its stream's leader dies while a client publishes."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.netns import Host, Network, netns_available

ROOT = Path(__file__).resolve().parents[2]
#: Seconds a node may take to start and to find its cluster's quorum on a loaded machine.
NODES_READY = 180.0
CLIENT_PORT = 4222
ROUTE_PORT = 6222
FIRST, SECOND = 2000, 1000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def network() -> Iterator[Network]:
    """A fresh network of namespaces, or a skip saying why there cannot be one here."""
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    with Network("nats") as net:
        yield net


def start_node(host: Host, peers: list[Host], tmp_path: Path) -> Path:
    """Run ``python -m server.bus.natsd`` on ``host`` with routes to ``peers``; its log's path."""
    routes = [arg for peer in peers for arg in ("--route", f"nats-route://{peer.address}:{ROUTE_PORT}")]
    log = tmp_path / host.name / "node.log"
    host.spawn([sys.executable, "-m", "server.bus.natsd", "--name", host.name, "--store-dir",
                str(tmp_path / host.name / "js"), "--host", host.address, "--port", str(CLIENT_PORT),
                "--cluster-name", "meters", "--cluster-port", str(ROUTE_PORT), *routes], log_path=log, cwd=ROOT)
    return log


def wait_until_healthy(logs: dict[str, Path], hosts: dict[str, Host]) -> float:
    """Wait until every node logged ``nats_healthy`` (its cluster has a meta leader); the seconds it took."""
    began = time.monotonic()
    while True:
        pending = [name for name, log in logs.items()
                   if not (log.exists() and "event=nats_healthy" in log.read_text(errors="replace"))]
        if not pending:
            return time.monotonic() - began
        for name in pending:
            if all(process.poll() is not None for process in hosts[name].processes):
                pytest.fail(f"node {name} exited:\n{logs[name].read_text(errors='replace')[-3000:]}")
        if time.monotonic() - began > NODES_READY:
            pytest.fail(f"nodes {pending} not healthy after {NODES_READY:.0f} s:\n"
                        + "\n".join(logs[name].read_text(errors="replace")[-2000:] for name in pending))
        time.sleep(0.2)


def client_argv(command: str, servers: str, *args: str) -> list[str]:
    """The client script's command line."""
    return [sys.executable, "-m", "tests.cluster.nats_client", command, "--servers", servers, *args]


def run_client(client: Host, argv: list[str], timeout: float) -> dict[str, Any]:
    """Run the client script to its end on the client host; its JSON result."""
    done = client.run(argv, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def acknowledged_so_far(progress: Path) -> int:
    """The count a running client wrote to its progress file (0 before it wrote one)."""
    try:
        return int(progress.read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def test_every_acknowledged_message_is_kept_once_when_the_stream_leaders_host_dies(network: Network,
                                                                                    tmp_path: Path) -> None:
    nodes = {name: network.add_host(name) for name in ("n1", "n2", "n3")}
    client = network.add_host("client")
    logs = {name: start_node(host, [p for p in nodes.values() if p is not host], tmp_path)
            for name, host in nodes.items()}
    formed = wait_until_healthy(logs, nodes)
    servers = ",".join(f"nats://{host.address}:{CLIENT_PORT}" for host in nodes.values())

    first = run_client(client, client_argv("publish", servers, "--create", "--replicas", "3", "--first", "0",
                                           "--count", str(FIRST)), timeout=200)
    assert first["unacked"] == [] and first["duplicate_acks"] == 0
    leader = nodes[first["leader"]]

    # The second client publishes at a steady pace; once a fifth of it is acknowledged, the leader's host dies.
    progress, output = tmp_path / "progress", tmp_path / "second.json"
    second_run = client.spawn(client_argv("publish", servers, "--first", str(FIRST), "--count", str(SECOND),
                                          "--rate", "200", "--deadline", "150", "--progress", str(progress),
                                          "--output", str(output)), log_path=tmp_path / "second.log", cwd=ROOT)
    began = time.monotonic()
    while acknowledged_so_far(progress) < SECOND // 5:
        assert second_run.poll() is None, (tmp_path / "second.log").read_text()[-3000:]
        assert time.monotonic() - began < 120, "the second client acknowledged too little to kill the leader"
        time.sleep(0.05)
    killed = leader.kill_all()
    assert killed and leader.pids() == []
    assert second_run.wait(timeout=200) == 0, (tmp_path / "second.log").read_text()[-3000:]
    second = json.loads(output.read_text())
    assert second["unacked"] == [], second["errors"]

    stream = run_client(client, client_argv("read", servers), timeout=200)
    stored = Counter(stream["ids"])
    acknowledged = {f"m{i}" for i in first["acked"] + second["acked"]}
    lost = sorted(acknowledged - set(stored))
    duplicated = sorted(msg_id for msg_id, n in stored.items() if n > 1)
    figures = (f"cluster figures: nodes formed in {formed:.1f} s; first run {len(first['acked'])} acknowledged at "
               f"{first['rate']}/s; killed {leader.name} (the stream leader, {len(killed)} processes); second run "
               f"{len(second['acked'])} acknowledged at a 200/s pace, longest gap without an acknowledgement "
               f"(failover) {second['longest_stall']} s, retries {second['errors']}; stream holds "
               f"{stream['messages']}, new leader {stream['leader']}; lost {len(lost)}, duplicated {len(duplicated)}")
    print(figures)
    assert (lost, duplicated) == ([], [])
    assert stream["messages"] == len(stored) == FIRST + SECOND
    assert stream["leader"] not in ("", leader.name)
    assert {r["name"]: r["current"] for r in stream["replicas"]}.get(leader.name) is False, stream["replicas"]
