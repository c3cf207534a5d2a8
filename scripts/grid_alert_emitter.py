#!/usr/bin/env python3
"""Raise grid alerts through the chain with the grid operator's key: from a scenario file,
then at random intervals, clearing each alert when it expires. Ctrl-C clears what is active."""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.billing import Billing  # noqa: E402
from common.chain import ChainClient  # noqa: E402
from common.deployment import load_deployment  # noqa: E402
from common.errors import SmartMeterError  # noqa: E402
from common.logs import log_event, setup_logging  # noqa: E402
from common.settings import load_settings  # noqa: E402
from server.grid_emitter import DEFAULT_REGIONS, Emitter, Scenario, log  # noqa: E402


def main() -> int:
    """Parse arguments and run the emitter."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scenario", type=Path, help="a scenario JSON file to play first")
    p.add_argument("--once", action="store_true", help="stop after the scenario (no random alerts)")
    p.add_argument("--min-interval", type=float, default=60.0, help="seconds between random alerts, at least")
    p.add_argument("--max-interval", type=float, default=180.0, help="seconds between random alerts, at most")
    p.add_argument("--regions", default=",".join(DEFAULT_REGIONS),
                   help="comma-separated regions for random alerts (an empty item means all regions)")
    p.add_argument("--seed", type=int, help="seed for random alerts")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--log-file", help="also write log lines to this file")
    args = p.parse_args()
    setup_logging(path=args.log_file)
    settings = load_settings()
    try:
        client = ChainClient(settings)
        client.check()
        billing = Billing(client, load_deployment(settings))
        scenario = Scenario.load(args.scenario) if args.scenario else None
    except SmartMeterError as err:
        print(f"grid_alert_emitter: {err.message} [{err.code}]", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"grid_alert_emitter: cannot read the scenario: {err}", file=sys.stderr)
        return 1
    emitter = Emitter(billing, random.Random(args.seed), regions=tuple(args.regions.split(",")),
                      min_interval=args.min_interval, max_interval=args.max_interval)

    def stop(*_: object) -> None:
        emitter.stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    until = time.time() + args.duration if args.duration else None
    log_event(log, "emitter_started", scenario=str(args.scenario or "-"), mode="once" if args.once else "random")
    try:
        if scenario is not None:
            emitter.run_scenario(scenario)
        if args.once:
            while not emitter.stopping and emitter.active and (until is None or time.time() < until):
                emitter.wait(1.0)
        else:
            emitter.run_random(until)
    finally:
        emitter.stopping = False
        emitter.clear_all()
        log_event(log, "emitter_stopped", active=len(emitter.active))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
