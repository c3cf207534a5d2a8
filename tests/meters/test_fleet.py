"""The fleet supervisor behind run-clients.sh: real meter processes, each log line written once,
and a meter whose process ended shown as such."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from rich.console import Console

from common.settings import ROOT
from meters.display import render_fleet
from meters.fleet import Fleet, fleet_rows
from meters.identity import meter_dir
from operations.provisioning import provision
from server.endpoint.tls import ensure_tls


def text_of(renderable) -> str:
    console = Console(record=True, width=200, force_terminal=False)
    console.print(renderable)
    return console.export_text()


def log_of(settings, name: str, log: str) -> str:
    path = meter_dir(settings.data_dir, name) / log
    return path.read_text() if path.exists() else ""


def test_fleet_meters_write_each_log_line_once_and_an_ended_one_shows_as_ended(meter_settings, deployment,
                                                                                monkeypatch):
    provision(meter_settings, count=3, history_days=0)
    ensure_tls(meter_settings.data_dir / "tls")  # no server runs: the meters log connection problems
    (meter_dir(meter_settings.data_dir, "meter-03") / "key.hex").chmod(0o644)  # meter-03 refuses to start
    for key, value in meter_settings.as_env().items():
        monkeypatch.setenv(key, value)
    names = ["meter-01", "meter-02", "meter-03"]
    fleet = Fleet(names, ["--time-scale", "30"], meter_settings.data_dir)
    try:
        fleet.start()
        deadline = time.monotonic() + 30
        while "event=communication_problem" not in log_of(meter_settings, "meter-02", "meter.log"):
            assert time.monotonic() < deadline, "meter-02 logged no connection problem"
            time.sleep(0.2)
        fleet.procs["meter-02"].send_signal(signal.SIGKILL)
        fleet.procs["meter-02"].wait(10)
        while "meter-03" not in fleet.exit_codes():
            assert time.monotonic() < deadline, "meter-03 did not give up"
            time.sleep(0.1)
        while True:  # meter-01 too has tried and failed to connect (later than the others on a loaded machine)
            codes = fleet.exit_codes()
            screen = text_of(render_fleet(fleet_rows(meter_settings.data_dir, names, codes), exit_codes=codes))
            if "disconnected" in next(x for x in screen.splitlines() if "meter-01" in x) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        fleet.stop()
    lines = screen.splitlines()
    assert "disconnected" in next(x for x in lines if "meter-01" in x)
    assert "ended (killed by SIGKILL)" in next(x for x in lines if "meter-02" in x)
    assert "ended (exit code 1)" in next(x for x in lines if "meter-03" in x)
    assert "see its console.log and meter.log" in screen

    meter_log = log_of(meter_settings, "meter-01", "meter.log")
    console_log = log_of(meter_settings, "meter-01", "console.log")
    assert "event=meter_started" in meter_log and "event=communication_problem" in meter_log
    assert "event=" not in console_log, "log lines are in meter.log only"
    # What is not a log line still reaches console.log: meter-03's reason for not starting.
    assert "chmod 600" in log_of(meter_settings, "meter-03", "console.log")


def test_the_fleet_piped_to_a_file_prints_a_meter_only_when_it_changes_with_money_in_pounds(meter_settings,
                                                                                             deployment):
    provision(meter_settings, count=2, history_days=0)
    ensure_tls(meter_settings.data_dir / "tls")  # no server runs: the meters go from starting to disconnected
    env = {**os.environ, **meter_settings.as_env()}
    ran = subprocess.run([sys.executable, "-m", "meters.fleet", "--count", "2", "--duration", "20"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    lines = [line for line in ran.stdout.splitlines() if line.startswith("fleet ")]
    by_meter = {name: [line for line in lines if f"meter={name} " in line] for name in ("meter-01", "meter-02")}
    assert all(by_meter.values()), ran.stdout
    assert all("bill='£0.00'" in line and "due=" not in line for line in lines), ran.stdout
    for name, shown in by_meter.items():
        # Each line is a change: never the same line twice in a row (the old output repeated all every 5 s).
        assert all(x != y for x, y in zip(shown, shown[1:], strict=False)), (name, shown)
    assert any("state='disconnected'" in line for line in by_meter["meter-01"]), ran.stdout
