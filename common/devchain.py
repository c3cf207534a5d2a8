"""The local development chain: Ganache from the npm install, with the project's flags.

One list of flags serves ``run-docker.sh`` (``python -m common.devchain flags``), the tests,
the benchmarks and the chaos harness, which start their own Ganache on a free port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common.settings import LOCAL_CHAIN_ID, ROOT

__all__ = ["ganache_flags", "GanacheProcess", "free_port", "rpc_answers"]

GANACHE_BIN = ROOT / "node_modules" / ".bin" / "ganache"


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc_answers(url: str, timeout: float = 1.0) -> bool:
    """Whether a JSON-RPC node answers ``eth_chainId`` at ``url``."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback URL
            return "result" in json.loads(resp.read())
    except (OSError, ValueError):
        return False


class GanacheProcess:
    """A Ganache child process on 127.0.0.1 with a persistent database directory."""

    def __init__(self, db_path: Path, port: int | None = None, log_path: Path | None = None) -> None:
        self.db_path = db_path
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

    def start(self, timeout: float = 60.0) -> GanacheProcess:
        """Start Ganache and wait until its RPC answers."""
        if not GANACHE_BIN.exists():
            raise RuntimeError("Ganache is not installed; run scripts/bootstrap.sh")
        self.db_path.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(GANACHE_BIN), *ganache_flags(self.port, str(self.db_path))],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Ganache exited with {self.proc.returncode}; see {self.log_path}")
            if rpc_answers(self.rpc_url):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Ganache did not answer on {self.rpc_url} within {timeout:.0f} s")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop Ganache (SIGINT, which lets it flush its database, then SIGKILL)."""
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
        """Stop and start again on the same port and database."""
        self.stop()
        self.start()


def main(argv: list[str]) -> int:
    """``flags PORT DBPATH [HOST]``: print the flags one per line (for run-docker.sh)."""
    if len(argv) >= 3 and argv[0] == "flags":
        print("\n".join(ganache_flags(int(argv[1]), argv[2], *(argv[3:4] or ["127.0.0.1"]))))
        return 0
    print("usage: python -m common.devchain flags PORT DBPATH [HOST]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
