"""A real nats-server from the pinned wheel: JetStream de-duplicates by message id and keeps what it
acknowledged across a restart; the configuration asks for fsync before every acknowledgement."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from common.devchain import free_port
from common.errors import ConfigError
from server.bus.natsd import NatsConfig, NatsServer, nats_server_binary, render_config

ROOT = Path(__file__).resolve().parents[3]


def node_config(tmp_path: Path, **overrides: object) -> NatsConfig:
    """A single node on free loopback ports with its store under the test's directory."""
    fields: dict[str, object] = {"name": "n1", "store_dir": tmp_path / "js", "port": free_port(),
                                 "http_port": free_port()}
    fields.update(overrides)
    return NatsConfig(**fields)  # type: ignore[arg-type]


async def stream_messages(url: str, stream: str) -> int:
    """How many messages ``stream`` holds."""
    nc = await nats.connect(url, connect_timeout=10)
    try:
        info = await nc.jetstream(timeout=10).stream_info(stream)
        return int(info.state.messages)
    finally:
        await nc.close()


async def test_a_publish_repeated_with_its_message_id_is_stored_once_and_survives_a_restart(tmp_path: Path) -> None:
    node = NatsServer(node_config(tmp_path))
    await node.start_async()
    try:
        nc = await nats.connect(node.url, connect_timeout=10)
        js = nc.jetstream(timeout=10)
        await js.add_stream(StreamConfig(name="READINGS", subjects=["readings.>"], storage=StorageType.FILE))
        first = await js.publish("readings.m1", b"reading 7", headers={"Nats-Msg-Id": "m1:7"})
        again = await js.publish("readings.m1", b"reading 7", headers={"Nats-Msg-Id": "m1:7"})
        await nc.close()
        assert (first.duplicate, again.duplicate) == (None, True)
        assert again.seq == first.seq
        assert await stream_messages(node.url, "READINGS") == 1
    finally:
        await node.stop_async()
    assert not node.running

    async with NatsServer(node.config) as restarted:
        assert await stream_messages(restarted.url, "READINGS") == 1
        nc = await nats.connect(restarted.url, connect_timeout=10)
        message = await nc.jetstream(timeout=10).get_msg("READINGS", 1)
        await nc.close()
        assert message.data == b"reading 7"


def test_the_node_runs_with_fsync_before_every_acknowledgement(tmp_path: Path) -> None:
    config = node_config(tmp_path)
    assert "sync_interval: always" in render_config(config)
    assert "sync_interval" not in render_config(node_config(tmp_path, sync_always=False))
    with NatsServer(config) as node:
        assert node.config_path.read_text() == render_config(config)
        with urllib.request.urlopen(f"http://127.0.0.1:{config.http_port}/varz", timeout=10) as reply:
            varz = json.load(reply)
    assert varz["jetstream"]["config"]["sync_always"] is True
    assert varz["server_name"] == "n1"


def test_a_cluster_node_lists_its_routes(tmp_path: Path) -> None:
    text = render_config(node_config(tmp_path, host="10.0.0.1", cluster_name="c", cluster_port=7000,
                                     routes=("nats-route://10.0.0.2:7000", "nats-route://10.0.0.3:7000")))
    assert 'name: "c"' in text and 'host: "10.0.0.1"' in text and "port: 7000" in text
    assert 'routes: ["nats-route://10.0.0.2:7000", "nats-route://10.0.0.3:7000"]' in text


def test_a_missing_binary_is_a_config_error_that_says_how_to_install_it(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_SERVER_BIN", str(tmp_path / "nowhere" / "nats-server"))
    with pytest.raises(ConfigError, match="NATS_SERVER_BIN"):
        nats_server_binary()
    with pytest.raises(ConfigError, match="NATS_SERVER_BIN"):
        NatsServer(node_config(tmp_path)).start()
    monkeypatch.delenv("NATS_SERVER_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    with pytest.raises(ConfigError, match="scripts/bootstrap.sh"):
        nats_server_binary()


def test_the_server_found_is_the_version_requirements_natsd_pins() -> None:
    pinned = re.search(r"^nats-server-bin==(\S+)", (ROOT / "requirements-natsd.txt").read_text(), re.M)
    assert pinned is not None
    version = subprocess.run([str(nats_server_binary()), "--version"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    assert version.strip() == f"nats-server: v{pinned.group(1)}"


def test_a_node_that_cannot_start_is_a_config_error_quoting_its_log(tmp_path: Path) -> None:
    with NatsServer(node_config(tmp_path, name="first")) as first:
        taken = node_config(tmp_path, name="second", port=first.config.port)
        second = NatsServer(taken, ready_timeout=60)
        with pytest.raises(ConfigError, match="exited with status") as failure:
            second.start()
        assert "address already in use" in str(failure.value)
        assert not second.running


def gone(pid: int) -> bool:
    """Whether a process has exited (a zombie nobody reaped counts)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def test_the_node_dies_with_the_process_that_started_it_when_that_is_killed(tmp_path: Path) -> None:
    code = ("import sys, time\n"
            "from pathlib import Path\n"
            "from server.bus.natsd import NatsConfig, NatsServer\n"
            f"node = NatsServer(NatsConfig.local(Path({str(tmp_path / 'js')!r})))\n"
            "node.start()\n"
            "assert node.process is not None\n"
            "print(node.process.pid, flush=True)\n"
            "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert parent.stdout is not None
        nats_pid = int(parent.stdout.readline())
        assert not gone(nats_pid)
    finally:
        parent.kill()
        parent.wait(timeout=60)
    deadline = time.monotonic() + 60
    while not gone(nats_pid):
        assert time.monotonic() < deadline, "nats-server outlived the process that started it"
        time.sleep(0.1)
