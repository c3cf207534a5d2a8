"""A Docker engine of the tests' own: ``dockerd`` on its own socket, data root, exec root, pid file and
containerd namespace, so that neither ``run-docker.sh`` nor any other test sees it (they look at the
default socket and switch to Docker when it answers), and so that stopping it touches nothing else.

Its data root is kept in a cache directory (``SMARTMETER_DOCKER_CACHE``, default
``~/.cache/smartmeter-docker``) so that the base image and the images' layers are built once per
machine; everything else (socket, exec root, pid file, log) lives in a temporary directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PrivateEngine", "EngineUnavailable", "cache_dir"]

#: How long the daemon may take to answer after it was started (it sets up its data root and networks).
START_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
#: How long to wait for another test run's engine on the same cached data root to stop.
LOCK_TIMEOUT = 60.0


class EngineUnavailable(Exception):
    """No Docker engine can be started here (the reason is the message: the test skips with it)."""


def cache_dir() -> Path:
    """Where the engine's data root and the base image's tarball are kept between runs."""
    return Path(os.environ.get("SMARTMETER_DOCKER_CACHE") or Path.home() / ".cache" / "smartmeter-docker")


class PrivateEngine:
    """``dockerd`` started for a test and stopped after it, on ``unix://<tmp>/docker.sock``."""

    def __init__(self, name: str = "smartmeter-test") -> None:
        self.name = name
        self.run_dir = Path(tempfile.mkdtemp(prefix="smartmeter-dockerd-"))
        self.socket = self.run_dir / "docker.sock"
        self.data_root = cache_dir() / "engine"
        self.log_path = self.run_dir / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None
        self._made_bridge = False

    @property
    def host(self) -> str:
        """The ``DOCKER_HOST`` of this engine."""
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """This process's environment pointed at this engine (for docker, docker-compose and the scripts)."""
        return {**os.environ, "DOCKER_HOST": self.host, "SMARTMETER_DOCKER_CACHE": str(cache_dir()),
                "COMPOSE_DOCKER_CLI_BUILD": "0"}

    def start(self) -> None:
        """Start the daemon and wait until it answers; ``EngineUnavailable`` saying why it cannot."""
        for tool in ("dockerd", "docker", "docker-compose"):
            if shutil.which(tool) is None:
                raise EngineUnavailable(f"{tool} is not installed (Debian's docker.io and docker-compose; "
                                        "scripts/bootstrap.sh --browser installs them)")
        if os.geteuid() != 0:
            raise EngineUnavailable("dockerd needs root here (rootless Docker is not set up)")
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._take_data_root()
        self._made_bridge = not Path("/sys/class/net/docker0").exists()
        command = [
            "dockerd", "--host", self.host, "--data-root", str(self.data_root),
            "--exec-root", str(self.run_dir / "exec"), "--pidfile", str(self.run_dir / "docker.pid"),
            "--containerd-namespace", self.name, "--containerd-plugins-namespace", f"{self.name}-plugins",
            "--log-level", "warn",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineUnavailable(f"dockerd exited with {self.process.returncode}: {self.log_tail()}")
            if self.docker("info", check=False, timeout=20).returncode == 0:
                return
            time.sleep(1)
        self.stop()
        raise EngineUnavailable(f"dockerd did not answer within {START_TIMEOUT:.0f} s: {self.log_tail()}")

    def _take_data_root(self) -> None:
        """Hold the cached data root's lock (two daemons on one data root would corrupt it)."""
        self._lock = os.open(cache_dir() / "engine.lock", os.O_CREAT | os.O_RDWR, 0o600)
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EngineUnavailable(f"another test run's engine uses {self.data_root}") from None
                time.sleep(1)

    def docker(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run the docker client against this engine."""
        return subprocess.run(["docker", *args], env=self.env(), capture_output=True, text=True, timeout=timeout,
                              check=check)

    def log_tail(self, lines: int = 15) -> str:
        """The end of the daemon's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL) and remove its run directory (the cached data root stays)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._made_bridge and shutil.which("ip") is not None:  # the default bridge it made goes with it
            subprocess.run(["ip", "link", "delete", "docker0"], capture_output=True, timeout=30)
            self._made_bridge = False
        if self._lock is not None:
            os.close(self._lock)  # releases the data root's lock
            self._lock = None
