"""Helpers shared by tests that run parts of the system as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from common.deployer import deploy
from common.deployment import Deployment
from common.devchain import GanacheProcess
from common.settings import ROOT, Settings

__all__ = ["ServerProcess", "both_indexes", "INDEX_BACKENDS", "deployed_on_own_chain"]

#: Seconds ``python -m server`` may take to listen (its gateway worker processes too) on a loaded machine.
START_TIMEOUT = 180

#: The index's engines: SQLite (the default) and PostgreSQL (``INDEX_URL``).
INDEX_BACKENDS = ("sqlite", "postgresql")
#: Runs a test once per engine of the index (through the ``index_backend`` fixture, which
#: ``new_index_url`` and the ``server`` fixtures follow).
both_indexes = pytest.mark.parametrize("index_backend", INDEX_BACKENDS, indirect=True)


@contextmanager
def deployed_on_own_chain(base: Path, settings: Settings) -> Iterator[tuple[Settings, Deployment]]:
    """A Ganache of its own under ``base`` (where a test may move the clock) with the contracts deployed on it:
    the settings pointing at it (deployments and data under ``base``) and the deployment; stopped after."""
    chain = GanacheProcess(base / "chain", log_path=base / "ganache.log").start()
    try:
        own = settings.replace(chain_rpc_url=chain.rpc_url, chain_ws_url=chain.ws_url,
                               deployments_dir=base / "deployments", data_dir=base / "data")
        deployment, _ = deploy(own, force=True)
        yield own, deployment
    finally:
        chain.stop()


class ServerProcess:
    """``python -m server`` as a child process with the test's settings (killed at exit if left running)."""

    live: list[ServerProcess] = []

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        ServerProcess.live.append(self)

    @classmethod
    def kill_all(cls) -> None:
        """Kill every server a test left running (a failed test must not leak processes)."""
        for server in cls.live:
            if server.proc is not None and server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()
        cls.live.clear()

    def env(self) -> dict[str, str]:
        """The child's environment: exactly the test's settings."""
        return {**os.environ, **self.settings.as_env()}

    async def start(self, ready: str = "gateway_listening") -> None:
        """Start it and wait until its log says ``ready``."""
        out = open(self.log_path, "ab")  # noqa: SIM115
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=self.env(),
                                     stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if ready in self.log_path.read_text()[offset:]:
                return
            assert self.proc.poll() is None, self.log_path.read_text()[-2000:]
            await asyncio.sleep(0.1)
        raise AssertionError(f"server did not start in {START_TIMEOUT} s: " + self.log_path.read_text()[-2000:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def interrupt(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=60)
