"""The namespace network: hosts reach each other and nothing else, a host can be unplugged and killed,
and every namespace and process is gone after the network closes, a failure included."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.netns import Host, Network, netns_available

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def _namespaces() -> Iterator[None]:
    reason = netns_available()
    if reason is not None:
        pytest.skip(reason)
    yield


def namespaces() -> set[str]:
    """The machine's named network namespaces."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=60, check=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


def connects(host: Host, address: str, port: int, wait: float = 0.0) -> bool:
    """Whether a TCP connection from ``host`` to ``address:port`` is accepted (trying for ``wait`` seconds)."""
    code = ("import socket, sys, time\n"
            f"deadline = time.monotonic() + {wait}\n"
            "while True:\n"
            "    try:\n"
            f"        socket.create_connection(({address!r}, {port}), timeout=3).close(); sys.exit(0)\n"
            "    except OSError:\n"
            "        if time.monotonic() > deadline: sys.exit(1)\n"
            "        time.sleep(0.1)\n")
    return host.run([sys.executable, "-c", code], timeout=wait + 60).returncode == 0


def test_hosts_reach_each_other_until_one_is_unplugged_and_its_processes_die_with_it(tmp_path: Path) -> None:
    with Network("nt") as net:
        a, b = net.add_host("a"), net.add_host("b")
        assert a.address != b.address and a.address.startswith("10.77.")
        server = b.spawn([sys.executable, "-m", "http.server", "--bind", b.address, "8000"],
                         log_path=tmp_path / "http.log", cwd=tmp_path)
        assert connects(a, b.address, 8000, wait=120)
        assert not connects(a, "127.0.0.1", 8000), "a host's loopback is its own"
        b.isolate()
        assert not connects(a, b.address, 8000)
        b.reconnect()
        assert connects(a, b.address, 8000)
        assert b.pids() == [server.pid]
        assert b.kill_all() == [server.pid]
        assert server.poll() is not None and b.pids() == []


def test_closing_after_a_failure_kills_every_process_and_deletes_every_namespace(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), Network("nt") as net:
        host = net.add_host("h")
        sleeper = host.spawn(["sleep", "600"], log_path=tmp_path / "sleep.log")
        made = {net.switch, host.namespace}
        assert made <= namespaces()
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert not made & namespaces()
