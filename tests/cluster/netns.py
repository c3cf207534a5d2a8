"""Machines for tests: hosts as Linux network namespaces joined by a bridge.

``with Network("nt") as net:`` makes a "switch" namespace holding a bridge; ``net.add_host("n1")`` makes a
namespace with its own loopback and one interface, ``eth0``, addressed ``10.77.R.N/24`` and cabled by a veth
pair to the bridge. Every interface is created inside the namespaces made here (``ip -n``), never in the
test's own, so nothing leaks into the machine's network and parallel runs (pytest-xdist) cannot collide:
only the namespaces' names are global, and each run's carry a random part. Programs run in a host with
``Host.spawn`` / ``Host.run`` (``ip netns exec``); the test process itself stays in the root namespace and
cannot reach the hosts' addresses. On exit, even after a failure, every process in every namespace is
killed and the namespaces are deleted (which removes their interfaces and the bridge).

Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2: ``netns_available()`` says why not otherwise.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["Network", "Host", "netns_available"]

#: Seconds an ``ip`` command may take on a loaded machine.
_IP_TIMEOUT = 60.0


def _ip(*args: str) -> None:
    """Run one ``ip`` command; a RuntimeError with its output if it fails."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {(done.stderr or done.stdout).strip()}")


def _pids(namespace: str) -> list[int]:
    """The processes running in a namespace."""
    done = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, timeout=_IP_TIMEOUT)
    return [int(word) for word in done.stdout.split()] if done.returncode == 0 else []


def _kill_namespace(namespace: str, sig: int = signal.SIGKILL, wait: float = 10.0) -> list[int]:
    """Send ``sig`` to every process in a namespace (again while new ones appear); the pids signalled."""
    signalled: list[int] = []
    deadline = time.monotonic() + wait
    while True:
        pids = [pid for pid in _pids(namespace) if pid != os.getpid()]
        if not pids:
            return signalled
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            signalled.append(pid)
        if sig != signal.SIGKILL or time.monotonic() > deadline:
            return signalled
        time.sleep(0.05)


def netns_available() -> str | None:
    """None when namespaces, veth pairs and bridges can be made here, else why not (for ``pytest.skip``)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); this test runs as a normal user"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"probe-{secrets.token_hex(4)}"
    try:
        _ip("netns", "add", probe)
    except (RuntimeError, OSError, subprocess.SubprocessError) as refused:
        return f"ip netns add is not permitted here: {refused}"
    try:
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
        _ip("-n", probe, "link", "add", "a0", "type", "veth", "peer", "name", "b0")
    except (RuntimeError, OSError, subprocess.SubprocessError) as refused:
        return f"a bridge or veth pair cannot be made in a namespace here: {refused}"
    finally:
        with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
            _ip("netns", "del", probe)
    return None


class Host:
    """One machine: a network namespace with ``lo`` and ``eth0`` at ``address``."""

    def __init__(self, name: str, namespace: str, address: str) -> None:
        self.name = name
        self.namespace = namespace
        self.address = address
        self.processes: list[subprocess.Popen[bytes]] = []

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address})"

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def spawn(self, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running program on this host, its stdout and stderr appended to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(self._argv(argv), stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, env=None if env is None else dict(env), cwd=cwd)
        self.processes.append(process)
        return process

    def run(self, argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a short program on this host and return its exit status and output (not checked)."""
        return subprocess.run(self._argv(argv), capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else dict(env), cwd=cwd)

    def pids(self) -> list[int]:
        """The processes running on this host."""
        return _pids(self.namespace)

    def kill_all(self, sig: int = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to every process on this host (SIGKILL: the machine dies); the pids signalled."""
        signalled = _kill_namespace(self.namespace, sig)
        if sig == signal.SIGKILL:
            for process in self.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        return signalled

    def isolate(self) -> None:
        """Unplug the host's cable: its interface goes down, its processes keep running."""
        _ip("-n", self.namespace, "link", "set", "eth0", "down")

    def reconnect(self) -> None:
        """Plug the cable back in."""
        _ip("-n", self.namespace, "link", "set", "eth0", "up")


class Network:
    """A switch (a bridge in a namespace of its own) and the hosts cabled to it; a context manager."""

    def __init__(self, name_prefix: str = "sm", subnet: str | None = None) -> None:
        self.run_id = f"{name_prefix}-{secrets.token_hex(3)}"
        self.subnet = ipaddress.ip_network(subnet or f"10.77.{secrets.randbelow(250) + 1}.0/24")
        self.switch = f"{self.run_id}-switch"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []

    def __enter__(self) -> Network:
        try:
            self._add_namespace(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _add_namespace(self, namespace: str) -> None:
        _ip("netns", "add", namespace)
        self._namespaces.append(namespace)
        _ip("-n", namespace, "link", "set", "lo", "up")

    def add_host(self, name: str) -> Host:
        """A new host on the switch, with the subnet's next address."""
        if name in self.hosts:
            raise ValueError(f"host {name} exists already")
        number = len(self.hosts) + 1
        address = str(self.subnet.network_address + number)
        namespace = f"{self.run_id}-{name}"
        self._add_namespace(namespace)
        # Both ends are made in the switch (names are per namespace there: p1, p2, ...), then one moves.
        port, cable = f"p{number}", f"h{number}"
        _ip("-n", self.switch, "link", "add", cable, "type", "veth", "peer", "name", port)
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")
        _ip("-n", self.switch, "link", "set", cable, "netns", namespace)
        _ip("-n", namespace, "link", "set", cable, "name", "eth0")
        _ip("-n", namespace, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        host = Host(name, namespace, address)
        self.hosts[name] = host
        return host

    def close(self) -> None:
        """Kill every process in the network's namespaces and delete them (idempotent)."""
        for namespace in reversed(self._namespaces):
            _kill_namespace(namespace)
        for host in self.hosts.values():
            for process in host.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        for namespace in reversed(self._namespaces):
            with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
                _ip("netns", "del", namespace)
        self._namespaces.clear()
