"""``python -m meters.fleet``: start a fleet of meter processes and show them on one screen.

Each meter runs as its own process (``python -m meters NAME --plain --quiet``) with its log in
``DATA_DIR/meters/NAME/meter.log`` and anything else it prints (a crash's traceback) in
``console.log`` beside it; this supervisor shows every meter's bill, state and last problem in
one table (from each meter's ``status.json``, and what it knows of the processes: a meter whose
process ended says so), restarts nothing by itself, and on Ctrl-C stops them all cleanly
(SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from common.settings import ROOT, load_settings
from meters.identity import list_meters, meter_dir
from meters.status import LinkState, MeterStatus

__all__ = ["Fleet", "read_statuses", "fleet_rows"]

STOP_GRACE = 10.0


def read_statuses(data_dir: Path, names: list[str]) -> list[MeterStatus]:
    """Every meter's last written status (meters that wrote none yet are left out)."""
    out = []
    for name in names:
        path = meter_dir(data_dir, name) / "status.json"
        try:
            out.append(MeterStatus.from_json(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


def fleet_rows(data_dir: Path, names: list[str], exit_codes: dict[str, int]) -> list[MeterStatus]:
    """The statuses to show: every meter that wrote one, and a bare row for a meter that ended without one."""
    rows = read_statuses(data_dir, names)
    known = {s.name for s in rows}
    rows += [MeterStatus(name=n, meter="", state=LinkState.STOPPED)
             for n in names if n in exit_codes and n not in known]
    order = {n: i for i, n in enumerate(names)}
    return sorted(rows, key=lambda s: order.get(s.name, len(order)))


class Fleet:
    """A set of meter child processes."""

    def __init__(self, names: list[str], extra_args: list[str], data_dir: Path) -> None:
        self.names = names
        self.extra_args = extra_args
        self.data_dir = data_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        """Start every meter, each logging to its own file."""
        for name in self.names:
            log_path = meter_dir(self.data_dir, name) / "console.log"
            out = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "meters", name, "--plain", "--quiet", *self.extra_args],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def alive(self) -> int:
        """How many meters still run."""
        return sum(1 for p in self.procs.values() if p.poll() is None)

    def exit_codes(self) -> dict[str, int]:
        """The meters whose process has ended, with its exit code (negative: killed by that signal)."""
        return {name: code for name, proc in self.procs.items() if (code := proc.poll()) is not None}

    def stop(self) -> None:
        """SIGTERM every meter, wait, SIGKILL stragglers."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> int:
    """Parse arguments, start the fleet, show it until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m meters.fleet", description=__doc__)
    parser.add_argument("--count", type=int, help="how many meters (default METER_COUNT, 12)")
    parser.add_argument("--time-scale", type=float, help="passed to every meter")
    parser.add_argument("--plain", action="store_true",
                        help="print a meter's line when its state, bill or problem changes, instead")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    args = parser.parse_args()
    settings = load_settings()
    names = list_meters(settings.data_dir)[: args.count or settings.meter_count]
    if not names:
        print("run-clients: no provisioned meters; run ./run-server.sh first (it provisions them)", file=sys.stderr)
        return 1
    extra = ["--time-scale", str(args.time_scale)] if args.time_scale else []
    fleet = Fleet(names, extra, settings.data_dir)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    fleet.start()
    meters = "1 meter" if len(names) == 1 else f"{len(names)} meters"
    print(f"run-clients: started {meters}; logs in {settings.data_dir / 'meters'}/<name>/meter.log; "
          "Ctrl-C stops them", flush=True)
    deadline = time.monotonic() + args.duration if args.duration else None
    try:
        if sys.stdout.isatty() and not args.plain:
            from rich.live import Live

            from meters.display import render_fleet

            with Live(render_fleet([]), refresh_per_second=1, screen=False) as live:
                while not stop and fleet.alive() and (deadline is None or time.monotonic() < deadline):
                    codes = fleet.exit_codes()
                    live.update(render_fleet(fleet_rows(settings.data_dir, names, codes), exit_codes=codes))
                    time.sleep(1)
        else:
            from meters.display import FleetLog

            log = FleetLog()
            while not stop and fleet.alive() and (deadline is None or time.monotonic() < deadline):
                time.sleep(1)
                codes = fleet.exit_codes()
                for line in log.lines(fleet_rows(settings.data_dir, names, codes), time.time(), codes):
                    print(line, flush=True)
    finally:
        print("run-clients: stopping meters", flush=True)
        fleet.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
