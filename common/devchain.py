"""The local development chains: Ganache (the default) or Foundry's Anvil, from the npm install,
with the project's flags.

One list of flags per node serves ``run-docker.sh`` (``python -m common.devchain flags`` and
``anvil-flags``), the tests, the benchmarks and the harnesses, which start their own node on a
free port. Both nodes run chain id 1337 with the same deterministic accounts (Ganache's
``--wallet.deterministic`` keys come from one well-known mnemonic, which Anvil is given), the
shanghai hardfork the contract is compiled for, and a 30M block gas limit. Ganache mines every
transaction at once (automine); Anvil does too unless given a block time, when it mines a block
every ``block_time`` seconds, as a real network does, and offers ``anvil_reorg``,
``anvil_dropTransaction`` and ``anvil_setNextBlockBaseFeePerGas`` to make one misbehave.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Self

from common.settings import LOCAL_CHAIN_ID, ROOT

__all__ = [
    "DEV_MNEMONIC",
    "NODE_KINDS",
    "ganache_flags",
    "anvil_flags",
    "anvil_binary",
    "foundry_binary",
    "DevNode",
    "GanacheProcess",
    "AnvilProcess",
    "dev_node",
    "free_port",
    "rpc_answers",
    "rpc_call",
]

GANACHE_BIN = ROOT / "node_modules" / ".bin" / "ganache"
#: The mnemonic Ganache's ``--wallet.deterministic`` derives its accounts from (m/44'/60'/0'/0/i):
#: given to Anvil, it yields the same ten development keys (``common.settings.GANACHE_DEV_KEYS``).
DEV_MNEMONIC = "myth like bonus scare over problem client lizard pioneer submit female collect"
NODE_KINDS = ("ganache", "anvil")
#: npm's platform packages of Anvil, by (system, machine).
_ANVIL_PLATFORMS = {("Linux", "x86_64"): "linux-amd64", ("Linux", "aarch64"): "linux-arm64",
                    ("Darwin", "x86_64"): "darwin-amd64", ("Darwin", "arm64"): "darwin-arm64"}


def ganache_flags(port: int, db_path: str, host: str = "127.0.0.1") -> list[str]:
    """The flags every Ganache of this project runs with."""
    return [
        "--wallet.deterministic",
        "--wallet.totalAccounts", "10",
        "--wallet.defaultBalance", "100000",
        f"--chain.chainId={LOCAL_CHAIN_ID}",
        "--chain.hardfork", "shanghai",
        "--miner.blockGasLimit", "30000000",
        "--server.host", host,
        "--server.port", str(port),
        "--database.dbPath", db_path,
        "--logging.quiet",
    ]


def anvil_flags(port: int, state_path: str, host: str = "127.0.0.1", block_time: float = 0.0) -> list[str]:
    """The flags every Anvil of this project runs with; ``block_time`` 0 mines each transaction at once.

    The chain is kept in ``state_path`` (a JSON file Anvil loads at start, dumps every second
    and on exit), so a restarted node carries on from it, blocks and logs included, and with the
    state of recent blocks too (``--preserve-historical-states``): without them a restarted node
    can neither answer ``eth_call`` at a block before the restart nor reorganise past it.
    """
    flags = [
        "--mnemonic", DEV_MNEMONIC,
        "--accounts", "10",
        "--balance", "100000",
        "--chain-id", str(LOCAL_CHAIN_ID),
        "--hardfork", "shanghai",
        "--gas-limit", "30000000",
        "--host", host,
        "--port", str(port),
        "--state", state_path,
        "--state-interval", "1",
        "--preserve-historical-states",
        "--silent",
    ]
    if block_time > 0:
        flags += ["--block-time", f"{block_time:g}"]
    return flags


def foundry_binary(tool: str) -> Path:
    """A Foundry tool's (``anvil``, ``forge``) native binary from its npm platform package (else the npm wrapper)."""
    arch = _ANVIL_PLATFORMS.get((platform.system(), platform.machine()))
    if arch is not None:
        native = ROOT / "node_modules" / "@foundry-rs" / f"{tool}-{arch}" / "bin" / tool
        if native.exists():
            return native
    return ROOT / "node_modules" / ".bin" / tool


def anvil_binary() -> Path:
    """Anvil's native binary from its npm platform package (the npm wrapper script otherwise)."""
    return foundry_binary("anvil")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc_call(url: str, method: str, params: list[object] | None = None, timeout: float = 10.0) -> object:
    """One JSON-RPC call; returns its result, raises RuntimeError with the node's error."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback URL
        reply = json.loads(resp.read())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply.get("result")


def rpc_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a JSON-RPC node answers ``eth_chainId`` at ``url``."""
    try:
        rpc_call(url, "eth_chainId", timeout=timeout)
        return True
    except (OSError, ValueError, RuntimeError):
        return False


class DevNode:
    """A development node as a child process on 127.0.0.1, its data kept under ``data_path``."""

    kind = "node"

    def __init__(self, data_path: Path, port: int | None = None, log_path: Path | None = None) -> None:
        self.data_path = data_path
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        """HTTP JSON-RPC URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """WebSocket JSON-RPC URL (for eth_subscribe)."""
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line that starts the node."""
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> Self:
        """Start the node and wait until its RPC answers."""
        command = self.command()
        if not Path(command[0]).exists():
            raise RuntimeError(f"{self.kind} is not installed; run scripts/bootstrap.sh")
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}; see {self.log_path}")
            if rpc_answers(self.rpc_url):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind} did not answer on {self.rpc_url} within {timeout:.0f} s")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the node (SIGINT, which lets it write its data, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass

    def restart(self) -> None:
        """Stop and start again on the same port and data."""
        self.stop()
        self.start()

    def rpc(self, method: str, params: list[object] | None = None) -> object:
        """One JSON-RPC call to this node (tests and harnesses use the node's own extras this way)."""
        return rpc_call(self.rpc_url, method, params)


class GanacheProcess(DevNode):
    """Ganache with a persistent database directory; mines every transaction at once."""

    kind = "ganache"

    def __init__(self, db_path: Path, port: int | None = None, log_path: Path | None = None) -> None:
        super().__init__(db_path, port, log_path)

    @property
    def db_path(self) -> Path:
        """The database directory."""
        return self.data_path

    def command(self) -> list[str]:
        self.data_path.mkdir(parents=True, exist_ok=True)
        return [str(GANACHE_BIN), *ganache_flags(self.port, str(self.data_path))]


class AnvilProcess(DevNode):
    """Anvil keeping its chain in ``data_path/state.json``; ``block_time`` 0 mines at once (automine)."""

    kind = "anvil"

    def __init__(self, data_path: Path, port: int | None = None, log_path: Path | None = None,
                 block_time: float = 0.0) -> None:
        super().__init__(data_path, port, log_path)
        self.block_time = block_time

    @property
    def state_path(self) -> Path:
        """The file the chain is kept in."""
        return self.data_path / "state.json"

    def command(self) -> list[str]:
        self.data_path.mkdir(parents=True, exist_ok=True)
        return [str(anvil_binary()), *anvil_flags(self.port, str(self.state_path), block_time=self.block_time)]


def dev_node(kind: str, data_path: Path, port: int | None = None, log_path: Path | None = None,
             block_time: float = 0.0) -> DevNode:
    """A development node of ``kind`` (``ganache`` or ``anvil``; Ganache ignores ``block_time``)."""
    if kind == "ganache":
        return GanacheProcess(data_path, port, log_path)
    if kind == "anvil":
        return AnvilProcess(data_path, port, log_path, block_time)
    raise ValueError(f"unknown node {kind!r}; expected one of {', '.join(NODE_KINDS)}")


USAGE = ("usage: python -m common.devchain flags PORT DBPATH [HOST]\n"
         "       python -m common.devchain anvil-flags PORT STATEPATH [HOST [BLOCK_TIME]]\n"
         "       python -m common.devchain anvil-binary")


def main(argv: list[str]) -> int:
    """Print a node's flags one per line, or Anvil's binary (for run-docker.sh)."""
    if len(argv) >= 3 and argv[0] == "flags":
        print("\n".join(ganache_flags(int(argv[1]), argv[2], *(argv[3:4] or ["127.0.0.1"]))))
        return 0
    if len(argv) >= 3 and argv[0] == "anvil-flags":
        host = argv[3] if len(argv) > 3 else "127.0.0.1"
        block_time = float(argv[4]) if len(argv) > 4 and argv[4] else 0.0
        print("\n".join(anvil_flags(int(argv[1]), argv[2], host, block_time)))
        return 0
    if argv == ["anvil-binary"]:
        print(anvil_binary())
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
