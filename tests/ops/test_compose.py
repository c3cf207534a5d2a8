"""The compose file on a real Docker engine: the tests' own ``dockerd`` (its own socket, never the default
one), the base image made with debootstrap, both images built, ``docker-compose up`` with the Prometheus
profile, every one of the twelve meters billed on chain, Prometheus scraping a rising recorded-readings
counter, and ``down`` then ``up`` resuming the same chain. Skips, saying why, where no engine can start.

Its figures (build, start-up and whole-test times) are printed at the end (``-s`` shows them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from common.devchain import free_port, ganache_flags
from tests.ops.engine import EngineUnavailable, PrivateEngine

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "compose.yaml"
BASE = "smartmeter-base:bookworm"
PROMETHEUS_IMAGE = "smartmeter-test-prometheus:latest"
OPERATOR_API_KEY = "compose-test-operator-key"
#: HISTORY_DAYS=1 of half-hourly readings written at provisioning: live readings come after them.
HISTORY_READINGS = 48
#: Bounds on the slow steps (a loaded two-core machine; the first run on a machine also builds everything).
BUILD_TIMEOUT = 1500
UP_TIMEOUT = 600
BILLS_TIMEOUT = 600
T = TypeVar("T")


def compose_file() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_the_compose_chain_runs_ganache_with_the_flags_run_docker_uses():
    assert compose_file()["services"]["chain"]["command"] == ganache_flags(8545, "/data", "0.0.0.0")


def test_the_compose_file_publishes_ports_on_loopback_only_and_keeps_state_in_named_volumes():
    services = compose_file()["services"]
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published and all(port.startswith("127.0.0.1:") for port in published)
    volumes = set(compose_file()["volumes"])
    for name in ("chain", "deploy", "server", "meters", "emitter"):
        mounts = services[name].get("volumes") or compose_file()["x-app"]["volumes"]
        assert any(mount.split(":")[0] in volumes for mount in mounts), name
    assert {"postgres", "prometheus"} == {name for name, s in services.items() if s.get("profiles")}


class Stack:
    """The compose project the test runs on its engine, with its published ports."""

    def __init__(self, engine: PrivateEngine, work: Path) -> None:
        self.engine = engine
        self.project = f"smtest{os.getpid()}"
        self.ports = {name: free_port() for name in ("CHAIN", "METERS", "HTTP", "PROMETHEUS")}
        self.env_file = work / "compose.env"
        keys = [line for line in (ROOT / ".env.example").read_text().splitlines()
                if line.split("=")[0] in ("ADMIN_KEY", "OPERATOR_KEY", "GATEWAY_KEY", "GRID_OPERATOR_KEY",
                                          "RELAYER_KEY")]
        self.env_file.write_text("\n".join([
            *keys, f"OPERATOR_API_KEY={OPERATOR_API_KEY}", "HISTORY_DAYS=1", "READING_MIN_INTERVAL=5",
            "READING_MAX_INTERVAL=15", f"PROMETHEUS_IMAGE={PROMETHEUS_IMAGE}",
            *(f"{name}_PUBLISH_PORT={port}" for name, port in self.ports.items())]) + "\n")

    def compose(self, *args: str, timeout: float = UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
        command = ["docker-compose", "--env-file", str(self.env_file), "-p", self.project, "-f", str(COMPOSE),
                   "--profile", "prometheus", *args]
        result = subprocess.run(command, cwd=ROOT, env=self.engine.env(), capture_output=True, text=True,
                                timeout=timeout)
        assert result.returncode == 0, f"docker-compose {' '.join(args)}: {result.stdout}{result.stderr}"
        return result

    def api(self, path: str) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.ports['HTTP']}{path}",
                                         headers={"X-API-Key": OPERATOR_API_KEY})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def healthy(self) -> dict[str, Any] | None:
        """``/health`` once every part is up (it answers 503 before)."""
        health: dict[str, Any] = self.api("/api/v1/health")
        return health if health["status"] == "ok" else None

    def prometheus(self, query: str) -> float | None:
        url = f"http://127.0.0.1:{self.ports['PROMETHEUS']}/api/v1/query?query={query}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            result = json.load(answer)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def logs(self) -> str:
        result = subprocess.run(["docker-compose", "--env-file", str(self.env_file), "-p", self.project, "-f",
                                 str(COMPOSE), "--profile", "prometheus", "logs", "--tail", "15", "--no-color"],
                                cwd=ROOT, env=self.engine.env(), capture_output=True, text=True, timeout=120)
        return result.stdout[-6000:]


def until(what: str, check: Callable[[], T | None], timeout: float, stack: Stack, every: float = 3.0) -> T:
    """Poll ``check`` until it returns something, or fail after ``timeout`` with the services' logs."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            found = check()
            if found is not None and found is not False:
                return found
        except (OSError, urllib.error.URLError, ValueError, KeyError) as err:
            last = err
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last error: {last})\n{stack.logs()}")


@pytest.fixture(scope="module")
def engine() -> Iterator[PrivateEngine]:
    """The tests' own dockerd, stopped after the module."""
    engine = PrivateEngine()
    try:
        engine.start()
    except EngineUnavailable as err:
        engine.stop()
        pytest.skip(f"no Docker engine can be started here: {err}")
    try:
        yield engine
    finally:
        engine.stop()


def run(engine: PrivateEngine, command: list[str], timeout: float, **env: str) -> float:
    """Run a script against the engine; the seconds it took."""
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env={**engine.env(), **env}, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stdout[-3000:]}{result.stderr[-3000:]}"
    return time.monotonic() - started


def build_prometheus_image(engine: PrivateEngine, work: Path) -> None:
    """Prometheus for the compose file's profile, from Debian's binary on this machine (no registry here)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed (scripts/bootstrap.sh --browser installs it)")
    context = work / "prometheus"
    context.mkdir()
    shutil.copy(binary, context / "prometheus")
    (context / "Dockerfile").write_text(
        f"FROM {BASE}\nCOPY prometheus /usr/local/bin/prometheus\n"
        "RUN mkdir /prometheus && chown nobody:nogroup /prometheus\nUSER nobody\n"
        'ENTRYPOINT ["/usr/local/bin/prometheus"]\n')
    engine.docker("build", "-q", "-t", PROMETHEUS_IMAGE, str(context), timeout=BUILD_TIMEOUT)


def billed_meters(stack: Stack) -> list[dict[str, Any]] | None:
    """The twelve meters once each has a live reading (after its day of history) recorded in a block."""
    meters = stack.api("/api/v1/meters")
    live = [m for m in meters if _seq(m) > HISTORY_READINGS and m["last_reading"]["block"] is not None
            and m["open_bill"]["energy_wh"] > 0]
    return meters if len(meters) == 12 and len(live) == 12 else None


def _seq(meter: dict[str, Any]) -> int:
    return int(meter["last_reading"]["seq"]) if meter["last_reading"] else 0


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT + 3 * UP_TIMEOUT + 2 * BILLS_TIMEOUT)
def test_compose_runs_the_system_bills_every_meter_and_resumes_the_same_chain(engine, tmp_path, capsys):
    started = time.monotonic()
    figures: dict[str, float] = {}
    figures["base_s"] = run(engine, ["ops/docker/base.sh", BASE], BUILD_TIMEOUT)
    figures["images_s"] = run(engine, ["scripts/docker-images.sh"], BUILD_TIMEOUT, BASE_IMAGE=BASE)
    build_prometheus_image(engine, tmp_path)
    stack = Stack(engine, tmp_path)
    try:
        up = time.monotonic()
        stack.compose("up", "-d")
        health = until("the server's /health answers ok", stack.healthy, UP_TIMEOUT, stack)
        figures["up_to_healthy_s"] = time.monotonic() - up
        first = until("all twelve meters billed on chain", lambda: billed_meters(stack),
                      BILLS_TIMEOUT, stack)
        figures["up_to_twelve_billed_s"] = time.monotonic() - up
        counter = "smartmeter_readings_recorded_total"
        scraped = until("Prometheus scrapes the server", lambda: stack.prometheus(counter), UP_TIMEOUT, stack)
        until("the recorded-readings counter rises in Prometheus",
              lambda: (v := stack.prometheus(counter)) is not None and v > scraped, BILLS_TIMEOUT, stack)
        assert stack.prometheus('up{job="smartmeter"}') == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.ports['PROMETHEUS']}/api/v1/rules", timeout=10) as got:
            rules = [rule for group in json.load(got)["data"]["groups"] for rule in group["rules"]]
        assert len(rules) == 10 and all(rule["health"] == "ok" for rule in rules)  # alerts.yml loaded and evaluated
        assert not [rule["name"] for rule in rules if rule["state"] == "firing"]

        stack.compose("down")
        again = time.monotonic()
        stack.compose("up", "-d")
        resumed = until("the server answers ok again", stack.healthy, UP_TIMEOUT, stack)
        figures["restart_to_healthy_s"] = time.monotonic() - again
        assert resumed["contract"] == health["contract"]  # the same deployment on the same chain
        assert resumed["parts"]["chain"]["latest_block"] >= health["parts"]["chain"]["latest_block"]
        # Each meter carries on from where it was: a newer reading recorded than before the restart.
        before = {m["address"]: _seq(m) for m in first}
        until("every meter records again after the restart",
              lambda: all(_seq(m) > before[m["address"]] for m in stack.api("/api/v1/meters")), BILLS_TIMEOUT, stack)
    finally:
        subprocess.run(["docker-compose", "--env-file", str(stack.env_file), "-p", stack.project, "-f",
                        str(COMPOSE), "--profile", "prometheus", "down", "-v", "--remove-orphans"],
                       cwd=ROOT, env=engine.env(), capture_output=True, timeout=UP_TIMEOUT)
    figures["whole_test_s"] = time.monotonic() - started
    sizes = {image: int(engine.docker("image", "inspect", "-f", "{{.Size}}", image).stdout) // 1_000_000
             for image in ("smartmeter-app:latest", "smartmeter-chain:latest", BASE)}
    with capsys.disabled():
        print(f"\ncompose test figures: {json.dumps({k: round(v) for k, v in figures.items()})}; "
              f"image sizes (MB): {json.dumps(sizes)}")


@pytest.mark.slow
def test_run_docker_starts_the_chain_in_the_engine_it_is_given_and_stops_it(engine, tmp_path):
    port = free_port()
    env = {**engine.env(), "DATA_DIR": str(tmp_path / "data"), "CHAIN_RPC_URL": f"http://127.0.0.1:{port}",
           "CHAIN_WS_URL": f"ws://127.0.0.1:{port}", "SMARTMETER_ENV_FILE": str(tmp_path / "no.env")}

    def run_docker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["./run-docker.sh", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT)

    started = run_docker()
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert "starting Ganache in Docker" in started.stdout
        running = engine.docker("ps", "--format", "{{.Names}} {{.Image}}").stdout
        assert "smartmeter-ganache" in running, running
        assert run_docker("--status").returncode == 0
        chain_files = list((tmp_path / "data" / "chain").iterdir())
        assert chain_files and all(f.stat().st_uid == os.getuid() for f in chain_files)
    finally:
        stopped = run_docker("--stop")
    assert stopped.returncode == 0 and "stopped the Ganache container" in stopped.stdout
    assert "smartmeter-ganache" not in engine.docker("ps", "--format", "{{.Names}}").stdout
    assert run_docker("--status").returncode == 1


def test_an_engine_that_cannot_start_says_why(monkeypatch):
    import tests.ops.engine as engine_module

    monkeypatch.setattr(engine_module.shutil, "which", lambda tool: None if tool == "dockerd" else f"/usr/bin/{tool}")
    engine = PrivateEngine()
    with pytest.raises(EngineUnavailable, match="dockerd is not installed"):
        engine.start()
    engine.stop()
    assert not engine.run_dir.exists()
