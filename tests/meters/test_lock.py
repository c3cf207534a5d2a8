"""One process per meter: a second process for a running meter says who runs it and exits,
leaving the first undisturbed; a lock dies with its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.deployer import deploy
from common.errors import AlreadyRunning
from common.settings import ROOT
from meters.identity import meter_dir
from meters.lock import MeterLock
from operations.provisioning import provision
from server.endpoint.tls import ensure_tls

HOLD = "import sys, time; from pathlib import Path; from meters.lock import MeterLock; " \
       "MeterLock(Path(sys.argv[1]), 'm').acquire(); print('held', flush=True); time.sleep(60)"


def hold_in_child(directory: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], cwd=ROOT, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def test_a_second_holder_is_refused_with_the_first_ones_process_id(tmp_path: Path) -> None:
    child = hold_in_child(tmp_path)
    try:
        with pytest.raises(AlreadyRunning, match=f"meter process {child.pid} "):
            MeterLock(tmp_path, "meter-07").acquire()
    finally:
        child.kill()
        child.wait()


def test_the_lock_is_free_again_once_its_holder_is_killed(tmp_path: Path) -> None:
    child = hold_in_child(tmp_path)
    child.send_signal(signal.SIGKILL)
    child.wait()
    with MeterLock(tmp_path, "meter-07") as lock:
        assert f'"pid": {os.getpid()}' in lock.path.read_text()


def test_a_second_meter_process_exits_at_once_and_the_first_runs_on_undisturbed(meter_settings) -> None:
    provision(meter_settings, count=1, history_days=0)
    ensure_tls(meter_settings.data_dir / "tls")
    directory = meter_dir(meter_settings.data_dir, "meter-01")
    env = {**os.environ, **meter_settings.as_env()}
    command = [sys.executable, "-m", "meters", "meter-01", "--plain"]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = directory / "meter.log"
        deadline = time.monotonic() + 30
        while not (log.exists() and "meter_started" in log.read_text(errors="replace")):
            assert time.monotonic() < deadline and first.poll() is None, "the first meter did not start"
            time.sleep(0.1)
        log_before = log.read_bytes()
        started = time.monotonic()
        second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert f"[already_running]: meter-01 is already in use by meter process {first.pid} " in second.stderr
        assert time.monotonic() - started < 10
        assert first.poll() is None, "the first meter must keep running"
        assert log.read_bytes().startswith(log_before)
        assert "already_running" not in log.read_text()
    finally:
        first.send_signal(signal.SIGINT)
        try:
            first.wait(20)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()


def test_provisioning_refuses_to_reset_a_running_meters_outbox(meter_settings, tmp_path: Path) -> None:
    settings = meter_settings.replace(deployments_dir=tmp_path / "deployments")  # not the session's record
    deploy(settings, force=True)
    provision(settings, count=1, history_days=0)
    directory = meter_dir(settings.data_dir, "meter-01")
    deploy(settings, force=True)  # a new contract: provisioning re-registers the meter and clears its outbox
    child = hold_in_child(directory)
    try:
        with pytest.raises(AlreadyRunning, match=f"process {child.pid} "):
            provision(settings, count=1, history_days=0)
    finally:
        child.kill()
        child.wait()
